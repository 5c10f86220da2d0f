//! Each guild's ban list, held in memory.
