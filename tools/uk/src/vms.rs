//! Background VMs (`cargo uk run -d`, `ps`, `logs`, `stop`): not yet.
use crate::Error;
use std::time::Duration;

fn todo() -> Result<i32, Error> {
    Err(Error::Failed(
        "background VMs are not implemented yet".into(),
    ))
}
/// `cargo uk ps`
pub fn ps() -> Result<i32, Error> {
    todo()
}
/// `cargo uk logs`
pub fn logs(_name: &str, _follow: bool) -> Result<i32, Error> {
    todo()
}
/// `cargo uk stop`
pub fn stop(_name: &str, _timeout: Duration) -> Result<i32, Error> {
    todo()
}
