//! OLM bundle and file-based catalog validation.
