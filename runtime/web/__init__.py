"""The browser as an edge target: a static offline site per artifact set (`edgeproof export web`), the
WebAssembly runtimes it carries (LiteRT.js, onnxruntime-web; fetched once from the npm registry, pinned and
verified), and a headless-Chromium driver that runs the page's own code from Python (the litertjs and ort-web
backends, parity and bench in the browser)."""
