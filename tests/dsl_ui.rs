//! The `#[server]` DSL, as the compiler sees it: every accepted form compiles
//! (and runs), every mistake fails with the message pinned in its `.stderr`.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test --test dsl_ui`,
//! then read every changed one before committing it.

#[test]
fn dsl_ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
