//! The exit statuses of the binary, as documented: 0 done, 1 otherwise, 2 for what the
//! operator must fix (usage, configuration, credentials, scopes), 3 when some events or users
//! failed for good (`replay`, `reconcile`). Each error type maps itself onto them.

/// Exit status for usage and configuration errors.
pub const EXIT_CONFIG: u8 = 2;
/// Exit status when some events or users failed permanently (`replay`, `reconcile`).
pub const EXIT_FAILED: u8 = 3;

/// An error that knows the exit status it gives.
pub trait ExitStatus: std::error::Error {
    /// The process's exit status for this error (0 for a stop asked before the start).
    fn exit_code(&self) -> u8;
}

/// An error and its causes on one line, `: `-separated, outermost first; a cause whose words
/// the line already holds (an error that prints its source itself) is not repeated.
pub fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
