// Starts Swagger UI on the page served at /docs. Kept in a file, not inline, so that the
// page's Content-Security-Policy (default-src 'self') needs no exception.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // The default validator badge calls a third-party service: never leave the origin.
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
