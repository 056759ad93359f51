//! End-to-end: room, roomlist and participants events as Talk clients see them.
