// /docs: Swagger UI over the app's own /openapi.json, its assets served by the app itself
// (swagger-ui-bundle, a PyPI package), so the page works offline and under a strict CSP.
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
