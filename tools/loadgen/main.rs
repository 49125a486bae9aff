//! loadgen: placeholder, replaced by the load tool.
fn main() {}
