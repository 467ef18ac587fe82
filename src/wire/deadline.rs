//! When a socket's shared clock must act on it: its authentication deadline or its token's
//! expiry, packed into one word of its outbound queue so that no socket holds a timer.

use std::sync::atomic::AtomicU64;

/// What a socket's clock waits for, in Unix milliseconds. The sockets' one shared clock
/// ([`OpenSockets`](super::sockets::OpenSockets)) acts on it, so no socket holds a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The client must have authenticated by then.
    Auth(u64),
    /// The client's token has expired by then (clock-skew leeway included).
    Token(u64),
}

/// [`Deadline`] packed into one word: the top bit marks a token's expiry; all ones, none.
#[derive(Debug)]
pub(super) struct PackedDeadline(pub(super) AtomicU64);

impl PackedDeadline {
    pub(super) const NONE: u64 = u64::MAX;
    const TOKEN: u64 = 1 << 63;

    pub(super) fn pack(deadline: Deadline) -> u64 {
        match deadline {
            Deadline::Auth(at) => at.min(Self::TOKEN - 1),
            Deadline::Token(at) => at.min(Self::TOKEN - 2) | Self::TOKEN,
        }
    }

    pub(super) fn unpack(word: u64) -> Option<Deadline> {
        match word {
            Self::NONE => None,
            w if w & Self::TOKEN != 0 => Some(Deadline::Token(w & !Self::TOKEN)),
            w => Some(Deadline::Auth(w)),
        }
    }

    pub(super) fn at(word: u64) -> u64 {
        word & !Self::TOKEN
    }
}
