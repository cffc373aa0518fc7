//! What commands tell the user and the CI system.
//!
//! - [`outcome`]: what each command did (its `--json` form);
//! - [`output`]: results on stdout (text or `--json`) and `$GITHUB_OUTPUT`;
//! - [`progress`]: progress on stderr while something takes time;
//! - [`events`]: deploy events sent to the cache server's history;
//! - [`bench`]: `cachectl bench`'s timings, tables and plot;
//! - [`bytes`]: byte counts for people.

pub mod bench;
pub mod bytes;
pub mod events;
pub mod outcome;
pub mod output;
pub mod progress;
