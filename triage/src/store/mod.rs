//! What the engine keeps: in memory for the next decision, on disk for the
//! next start.
//!
//! [`memory`] (every ticket with its vector) and [`faqbank`] (every article
//! phrasing with its vector and units) are the in-memory copies of the index
//! that decisions search exactly, and [`sessions`] the chat's conversations;
//! [`feedback`] (agents' corrections),
//! [`learned`] (phrasings learned from chats), [`headcache`] (trained heads)
//! and [`marker`] (which pack a data directory holds) are the files in the
//! data directory. Each store checks its own file format; none decides
//! anything.

pub mod faqbank;
pub mod feedback;
pub mod headcache;
pub mod learned;
pub mod marker;
pub mod memory;
pub mod sessions;
