//! The templates are compiled into the binary with `include_dir!`, which cargo does not track:
//! rebuild when anything under `templates/` changes.
fn main() {
    println!("cargo:rerun-if-changed=../templates");
}
