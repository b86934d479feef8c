//! sockserve-core (being written)
