// Bastion pages: optional progressive enhancement. Every page works without it.
(function () {
  "use strict";

  // Live password rules: tick each rule as it is met (the server remains the judge).
  function checkRule(rule, value) {
    if (rule.indexOf("min:") === 0) return value.length >= parseInt(rule.slice(4), 10);
    if (rule === "upper") return value !== value.toLowerCase();
    if (rule === "lower") return value !== value.toUpperCase();
    if (rule === "digit") return /[0-9]/.test(value);
    if (rule === "symbol") return /[^\p{L}\p{N}]/u.test(value);
    return null; // common / email: only the server can tell
  }
  document.querySelectorAll("input[data-rules]").forEach(function (input) {
    var list = document.getElementById(input.getAttribute("data-rules"));
    if (!list) return;
    input.addEventListener("input", function () {
      list.querySelectorAll("li[data-rule]").forEach(function (li) {
        var met = checkRule(li.getAttribute("data-rule"), input.value);
        if (met === null) return;
        li.classList.toggle("met", met && input.value.length > 0);
        li.classList.remove("unmet");
      });
    });
  });

  // Copy buttons (the backup codes): hidden without JavaScript.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.getAttribute("data-text") || source.innerText).then(
        function () {
          var label = button.textContent;
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = label; }, 2000);
        }
      );
    });
  });
})();
