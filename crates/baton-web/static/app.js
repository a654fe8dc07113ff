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
  const source = new EventSource(steps.dataset.stream);
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
    item.textContent = step.step + " — " + step.state + (step.detail ? ": " + step.detail : "");
  });
  source.addEventListener("end", (message) => {
    const deployment = JSON.parse(message.data);
    state.textContent = deployment.state + (deployment.error ? ": " + deployment.error : "");
    state.className = deployment.state === "succeeded" ? "ok" : "bad";
    source.close();
  });
}
