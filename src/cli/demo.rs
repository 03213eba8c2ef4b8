//! `demo`: the whole path with nothing installed; exits 1 when a user got other roles.

use super::fail;
use crate::demo::{self, DemoOptions};
use crate::shutdown::Shutdown;

pub async fn run(options: DemoOptions) -> u8 {
    let keep = options.keep_running.then(Shutdown::on_signals);
    let stdout = std::io::stdout();
    match demo::run(options, keep, &mut stdout.lock()).await {
        Ok(report) if report.mismatched_users == 0 => 0,
        Ok(_) => 1,
        Err(err) => fail(err, 1),
    }
}
