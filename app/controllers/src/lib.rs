//! `tvk-control-plane`: the application's controllers (one module each).
