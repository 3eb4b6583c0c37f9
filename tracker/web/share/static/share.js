// The share page's script: the copy button copies the copy channel's message, the share
// sheet button (shown only where the browser has one) opens it. Both ask the server for the
// channel's message as JSON (which records the share); every other button submits the form,
// which answers a redirect to its channel. Without this script the buttons still work.
"use strict";
(function () {
  var form = document.getElementById("share");
  var status = document.getElementById("status");
  var text = document.getElementById("message");
  if (!form) { return; }
  var sheet = form.querySelector("button[value=share_sheet]");
  if (sheet && typeof navigator.share === "function") { sheet.hidden = false; }

  function say(message) { status.textContent = message; }

  function press(channel) {
    var body = new URLSearchParams(new FormData(form));
    body.set("channel", channel);
    return fetch(form.action, {
      method: "POST", body: body, credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (resp) {
      if (!resp.ok) { throw new Error("status " + resp.status); }
      return resp.json();
    });
  }

  function selectByHand(message) {
    text.value = message;
    text.focus();
    text.select();
    say("Select the message and copy it.");
  }

  form.addEventListener("submit", function (event) {
    var button = event.submitter;
    var channel = button && button.value;
    if (channel !== "copy" && channel !== "share_sheet") { return; }
    event.preventDefault();
    press(channel).then(function (shared) {
      if (channel === "share_sheet") {
        return navigator.share({ text: shared.message }).then(function () {
          say("Shared.");
        }, function () { say(""); });
      }
      if (!navigator.clipboard) { selectByHand(shared.message); return undefined; }
      return navigator.clipboard.writeText(shared.message).then(function () {
        text.value = shared.message;
        say("Copied. Paste it wherever you like.");
      }, function () { selectByHand(shared.message); });
    }).catch(function () {
      say("That did not work. Please try again.");
    });
  });
})();
