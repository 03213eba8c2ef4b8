//! `explain`'s report: a user's ledger history, each grant judged against the current policy,
//! and (when the tenant answers) what the policy would give the user now.
