//! What the engine keeps: in memory for the next decision, on disk for the
//! next start.
//!
//! In memory:
//!
//! * [`memory`]: every ticket with its vector, searched exactly;
//! * [`faqbank`]: every article phrasing with its vector and units;
//! * [`sessions`]: the chat's conversations.
//!
//! In the data directory:
//!
//! * [`feedback`]: agents' corrections, the audit trail;
//! * [`learned`]: phrasings learned from chats, and their votes;
//! * [`headcache`]: trained heads, so a start need not train again;
//! * [`adapters`]: each tenant's accepted encoder adapter and last verdict;
//! * [`marker`]: which pack the directory holds.
//!
//! Each store checks its own file format; none decides anything.

pub mod adapters;
pub mod faqbank;
pub mod feedback;
pub mod headcache;
pub mod learned;
pub mod marker;
pub mod memory;
pub mod sessions;
