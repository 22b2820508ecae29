//! The engine: networks and endpoints, planned then applied, recorded crash-safely.
