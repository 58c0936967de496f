//! The sans-I/O Chord core of Cicada.
