//! What crosses the browser socket, shared by the layers that produce it (`jobs`) and the one
//! that carries it (`ws`): the typed protocol messages, each socket's bounded outbound
//! queue and the registry of the open ones with their shared clock. It sits below both so
//! that neither imports the other (docs/protocol.md).

pub mod deadline;
pub mod outbound;
pub mod protocol;
pub mod sockets;
