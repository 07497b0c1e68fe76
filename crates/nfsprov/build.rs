//! sqlx's `migrate!` embeds the migration files when the crate is compiled, and cargo does not
//! know it reads them: without this a migration added or changed is not in the next build.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations_pg");
}
