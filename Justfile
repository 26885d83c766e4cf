# Shortcuts for the `cargo uk` CLI (https://github.com/casey/just).
# Everything here also works as a plain cargo command.

# Build and boot the main app (the static file server once it exists).
run *ARGS:
    cargo uk run {{ARGS}}

# Every test: host unit tests, then QEMU integration tests.
test *ARGS:
    cargo uk test {{ARGS}}

# Build one app's image.
build APP:
    cargo uk build {{APP}}

# Benchmarks: boot, sched, idle.
bench WHAT *ARGS:
    cargo uk bench {{WHAT}} {{ARGS}}

# Formatting and lints, as CI runs them.
check:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo clippy --target x86_64-unknown-none -p unikernel -p hello -p selftest -p echo -p fstest -p iotest -- -D warnings
