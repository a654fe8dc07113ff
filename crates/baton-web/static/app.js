// Baton's dashboard: confirmations before actions, and live deployment steps.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.dataset.confirm;
  if (!question) return;
  let text = question;
  const select = form.querySelector("select[name=environment]");
  if (select) text = text.replace("{environment}", select.value);
  if (!window.confirm(text)) event.preventDefault();
});

const steps = document.getElementById("steps");
if (steps && steps.dataset.stream) {
  const state = document.getElementById("state");
  const error = document.getElementById("error");
  const source = new EventSource(steps.dataset.stream);
  const show = (item, step, detail) => {
    item.textContent = step.step + " — " + step.state + (detail ? ": " + detail : "");
  };
  source.addEventListener("step", (message) => {
    const step = JSON.parse(message.data);
    const id = "step-" + step.seq;
    let item = document.getElementById(id);
    if (!item) {
      item = document.createElement("li");
      item.id = id;
      steps.appendChild(item);
    }
    item.dataset.state = step.state;
    item.dataset.detail = step.detail || "";
    item.dataset.step = step.step;
    show(item, step, step.detail);
  });
  source.addEventListener("state", (message) => {
    const deployment = JSON.parse(message.data);
    state.textContent = deployment.state;
    // The Continue and Abort buttons are drawn by the server: a page drawn
    // before the pause is drawn again, once.
    if (deployment.state === "previewing" && steps.dataset.rendered !== "previewing") {
      source.close();
      window.location.reload();
    }
  });
  source.addEventListener("end", (message) => {
    const deployment = JSON.parse(message.data);
    state.textContent = deployment.state;
    state.className = deployment.state === "succeeded" ? "ok" : "bad";
    if (deployment.error) {
      // Shown once, as written (it may span lines); not again in its step.
      error.textContent = deployment.error;
      error.hidden = false;
      for (const item of steps.children) {
        if (item.dataset.detail === deployment.error) {
          show(item, {step: item.dataset.step, state: item.dataset.state}, "");
        }
      }
    }
    for (const id of ["preview", "following"]) {
      const gone = document.getElementById(id);
      if (gone) gone.remove();
    }
    source.close();
  });
}
