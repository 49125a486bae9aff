//! CPU pinning for the engine's threads.
//!
//! Pinning is opt-in (`core: Some(n)`): the default is to let the OS place
//! threads, which is right on a small shared box. A core that does not exist
//! is reported and ignored rather than fatal.

/// Pins the current thread to `core` when one is given.
pub fn pin(role: &str, core: Option<usize>) {
    let Some(id) = core else { return };
    let available = core_affinity::get_core_ids().unwrap_or_default();
    match available.into_iter().find(|c| c.id == id) {
        Some(core_id) if core_affinity::set_for_current(core_id) => {
            log::info!("{role} thread pinned to core {id}");
        }
        _ => log::warn!("{role} thread: cannot pin to core {id}; running unpinned"),
    }
}
