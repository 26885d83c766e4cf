//! The smallest app: prints a greeting and its arguments, then exits 0.
#![no_std]
#![no_main]

unikernel::main!(main);

fn main() {
    unikernel::println!("Hello from the unikernel!");
    let args = unikernel::env::args();
    if !args.is_empty() {
        unikernel::println!("args: {args:?}");
    }
}
