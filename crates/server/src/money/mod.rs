//! Money: the payments engine (the ledger's only writer), paid viewing
//! sessions with their meter, and watch statistics.

pub mod payments;
pub mod sessions;
pub mod stats;
pub mod verifier;
