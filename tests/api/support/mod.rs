//! What the end-to-end tests share: the in-process server and its client
//! ([`app`]), the real binary as a child process ([`binary`]), and the
//! requests and assertions the tests make ([`requests`]).

pub mod app;
pub mod binary;
pub mod requests;

pub use app::*;
pub use binary::*;
pub use requests::*;
