//! The integration tests: one binary, so the harness is compiled and linked once. Each module
//! drives the relay from outside — WebSocket, HTTP, signals — as a browser or an operator would.

mod support;

mod admin_listener;
mod auth_jwt;
mod backends;
mod cli;
mod cluster;
mod config_refusals;
mod decoders;
mod drain;
mod editor_routes;
mod front_door;
mod frontend;
mod layout;
mod local_cli;
mod memory_budget;
mod modal_backend;
mod nginx;
mod operations;
mod ops_console;
mod otel;
mod pipeline;
mod postgres_outage;
mod quotas;
mod races;
mod ready;
mod rest;
mod restart;
mod rolling;
mod shared_state;
mod store_behaviour;
mod versions;
mod ws_limits;
mod ws_relay;
