// Offline after the first visit: every file of this site (files.json, written by 'edgeproof export web') is
// cached on install and served from the cache first. A new export has a new cache name, so it replaces the old.
const FILES = self.location.href.replace(/sw\.js.*$/, "files.json");
let CACHE = "edgeproof-web";

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const list = await (await fetch(FILES, { cache: "no-store" })).json();
    const cache = await caches.open(`edgeproof-web-${list.version}`);
    await cache.addAll(list.files);
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    const list = await (await fetch(FILES, { cache: "no-store" })).json();
    CACHE = `edgeproof-web-${list.version}`;
    for (const name of await caches.keys()) if (name.startsWith("edgeproof-web-") && name !== CACHE) await caches.delete(name);
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  if (event.request.method !== "GET" || new URL(event.request.url).origin !== self.location.origin) return;
  event.respondWith((async () => (await caches.match(event.request, { ignoreSearch: true })) || fetch(event.request))());
});
