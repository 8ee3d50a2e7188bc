//! `sqlx::migrate!` embeds `../migrations` when this crate compiles: without
//! this, a migration added to the folder is missing from an incremental
//! build (Cargo does not know the macro read it).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
