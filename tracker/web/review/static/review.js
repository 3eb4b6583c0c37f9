// The review queue: select all, and count the selection on the bulk button.
(function () {
  var all = document.getElementById("all"), bulk = document.getElementById("bulk");
  if (!all || !bulk) return;
  var boxes = [].slice.call(document.querySelectorAll('input[name="id"]'));
  function sync() {
    var n = boxes.filter(function (b) { return b.checked; }).length;
    bulk.disabled = n === 0;
    bulk.textContent = "Approve selected (" + n + ")";
  }
  boxes.forEach(function (b) { b.addEventListener("change", sync); });
  all.addEventListener("change", function () {
    boxes.forEach(function (b) { b.checked = all.checked; });
    sync();
  });
  sync();
})();
