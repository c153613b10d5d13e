import { login } from "../api.js";
import { attempt, h, page, showError } from "../ui.js";

export function loginPage() {
  const username = h("input", { id: "login-username", testid: "login-username", autocomplete: "username", required: true });
  const password = h("input", { id: "login-password", testid: "login-password", type: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit", testid: "login-submit" }, "Sign in");
  const form = h(
    "form",
    {
      class: "card narrow",
      onsubmit: (ev) => {
        ev.preventDefault();
        if (!username.value || !password.value) {
          showError("enter a username and a password");
          return;
        }
        submit.disabled = true;
        attempt(async () => {
          await login(username.value, password.value);
          location.hash = "#/agents";
        }).finally(() => {
          submit.disabled = false;
          password.value = "";
        });
      },
    },
    h("label", { for: "login-username" }, "Username"),
    username,
    h("label", { for: "login-password" }, "Password"),
    password,
    submit,
    h("p", { class: "hint" }, "Your session is kept in this page's memory only: reloading the page signs you out."),
  );
  page("Sign in", form);
  username.focus();
}
