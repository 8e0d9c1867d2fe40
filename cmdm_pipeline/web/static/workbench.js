// Keyboard shortcuts of the review queue: a key clicks the element marked data-key (or data-key2) with it.
// Keys typed into a field are left alone (Escape leaves the field).
(function () {
  "use strict";
  var ARROWS = { ArrowDown: "next", ArrowUp: "prev" };

  function target(key) {
    return document.querySelector('#workspace [data-key="' + key + '"], #workspace [data-key2="' + key + '"]') ||
      document.querySelector('[data-key="' + key + '"]');
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var field = event.target.closest && event.target.closest("input, textarea, select");
    if (field) {
      if (event.key === "Escape") field.blur();
      return;
    }
    if (event.key === "r") {
      var reason = document.getElementById("reason");
      if (reason) { reason.focus(); event.preventDefault(); }
      return;
    }
    var key = ARROWS[event.key] || event.key;
    var element = target(key);
    if (!element) return;
    event.preventDefault();
    element.click();
  });

  // A refused htmx request (expired login, a pair gone from the snapshot...) says why at the top.
  document.addEventListener("htmx:responseError", function (event) {
    var flash = document.getElementById("flash");
    if (!flash) return;
    var text = event.detail.xhr.responseText || "";
    var holder = document.createElement("div");
    holder.innerHTML = text;
    flash.textContent = holder.textContent.trim() || ("request refused (" + event.detail.xhr.status + ")");
    flash.classList.add("error");
    if (event.detail.xhr.status === 401) {
      flash.textContent += " — ";
      var link = document.createElement("a");
      link.href = "/login?expired=1";
      link.textContent = "log in again";
      flash.appendChild(link);
    }
  });
  document.addEventListener("htmx:afterSwap", function () {
    var flash = document.getElementById("flash");
    if (flash && flash.classList.contains("error")) { flash.textContent = ""; flash.classList.remove("error"); }
  });
})();
