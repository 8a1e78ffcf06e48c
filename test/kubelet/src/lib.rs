//! Plays the kubelet's and a CSI driver's part for end-to-end tests against tvk-test-apiserver.
