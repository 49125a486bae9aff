//! The browser dashboard, embedded in the binary: `GET /` and its files.
//!
//! The files live in `web/` and are compiled in with `include_bytes!`, so
//! running the relay needs nothing else installed and nothing on disk. The
//! page refers to its files by relative paths, so it also works behind a
//! proxy that serves the relay under a path prefix.

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
        "/chart.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../../web/chart.js"),
        ),
        "/style.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../../web/style.css"),
        ),
        "/favicon.svg" => ("image/svg+xml", include_bytes!("../../web/favicon.svg")),
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
        for file in ["/app.js", "/chart.js", "/style.css", "/favicon.svg"] {
            assert!(super::get(file).is_some(), "{file}");
        }
        assert!(super::get("/nope.js").is_none());
    }

    #[test]
    fn every_module_the_page_imports_is_served() {
        // A file added to web/ but not to the match above would 404 in the
        // browser: check the page's and the scripts' references.
        let mut refs = Vec::new();
        for file in ["/", "/app.js", "/chart.js"] {
            let text = std::str::from_utf8(super::get(file).unwrap().1).unwrap();
            for quote in ['"', '\''] {
                for piece in text.split(quote).skip(1).step_by(2) {
                    let p = piece.trim_start_matches("./");
                    let known = [".js", ".css", ".svg"].iter().any(|e| p.ends_with(e));
                    if known && !p.contains('/') && !p.contains(' ') {
                        refs.push(format!("/{p}"));
                    }
                }
            }
        }
        assert!(refs.iter().any(|r| r == "/chart.js"), "{refs:?}");
        for r in refs {
            assert!(super::get(&r).is_some(), "{r} is referenced but not served");
        }
    }
}
