//! The browser dashboard, embedded in the binary: `GET /` and its files.
//!
//! The files live in `web/` and are compiled in with `include_bytes!`, so
//! running the relay needs nothing else installed and nothing on disk.

/// `(content type, body)` for a dashboard path, if it is one.
pub fn get(path: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("../../web/index.html"),
        ),
        "/app.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../../web/app.js"),
        ),
        "/style.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../../web/style.css"),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_and_its_files_are_served() {
        let (ctype, body) = super::get("/").unwrap();
        assert!(ctype.starts_with("text/html"));
        let page = std::str::from_utf8(body).unwrap();
        assert!(page.contains("app.js") && page.contains("style.css"));
        assert!(super::get("/app.js").is_some() && super::get("/style.css").is_some());
        assert!(super::get("/nope.js").is_none());
    }
}
