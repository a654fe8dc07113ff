"""Drives Baton's dashboard in headless Chromium (Debian's chromium and
chromedriver) and checks what a person would: log in, see the app, deploy
and watch the steps arrive live, watch a bad release fail (its error shown
once, as written) and no longer be offered, continue a paused preview, flip
a flag, roll back in one click, find them in the audit log and filter it;
release ids never broken across lines; a forged form refused; a viewer
offered no action. Takes screenshots of the main pages. Exits non-zero with
the reason on the first thing that is not as expected.

    python browser.py '<json config>'
"""

import json
import sys

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

cfg = json.loads(sys.argv[1])
BASE = cfg["base"]
SHOTS = cfg["screenshots"]


def fail(message):
    print("FAILED: " + message, flush=True)
    raise SystemExit(1)


def check(condition, message):
    if not condition:
        fail(message)


options = Options()
options.binary_location = "/usr/bin/chromium"
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"]:
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
wait = WebDriverWait(driver, 60)
report = {}


def shot(name):
    driver.save_screenshot(f"{SHOTS}/{name}.png")


def log_in(user, password):
    driver.get(BASE + "/login")
    check(driver.switch_to.active_element.get_attribute("id") == "user", "the login page does not focus the user name")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait.until(EC.url_to_be(BASE + "/"))


def submit_confirmed(button):
    button.click()
    wait.until(EC.alert_is_present())
    alert = driver.switch_to.alert
    question = alert.text
    alert.accept()
    return question


def wait_deployment():
    """On a deployment page: the state first seen, the steps first seen, and
    the steps once it ended."""
    wait.until(EC.url_contains("/deployments/"))
    state = driver.find_element(By.ID, "state").text
    first = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#steps li")]
    try:
        WebDriverWait(driver, 90).until(
            lambda d: d.find_element(By.ID, "state").text.split(":")[0] in ("succeeded", "failed")
        )
    except TimeoutException:
        fail("the deployment page never showed an end: " + driver.find_element(By.ID, "state").text)
    final = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#steps li")]
    return state, first, final, driver.find_element(By.ID, "state").text


def fetch(method, path, body, headers):
    return driver.execute_async_script(
        """
        const [method, path, body, headers, done] = arguments;
        fetch(path, {method, body, headers, credentials: "same-origin"})
          .then(r => r.text().then(t => done([r.status, t])))
          .catch(e => done([0, String(e)]));
        """,
        method, path, body, headers,
    )


def release_ids_on_one_line(where):
    """Each short release id in the page's cards and tables is one line."""
    broken = driver.execute_script(
        """return [...document.querySelectorAll("code.release")]
             .filter(c => c.getClientRects().length > 1).map(c => c.textContent);""")
    check(broken == [], "release ids broken across lines on %s: %r" % (where, broken))


# --- an admin ---
log_in("ada", cfg["ada"])
check("hello" in driver.find_element(By.TAG_NAME, "main").text, "the overview does not list the app")
check(driver.find_elements(By.CSS_SELECTOR, ".card code.release"), "the overview shows no release id")
release_ids_on_one_line("the overview")
shot("overview")

driver.find_element(By.LINK_TEXT, "hello").click()
wait.until(EC.url_to_be(BASE + "/apps/hello"))

# Deploy release v1 to staging, and watch its steps arrive.
row = driver.find_element(By.XPATH, f"//tr[td/code[text()='{cfg['v1']}']]")
Select(row.find_element(By.NAME, "environment")).select_by_visible_text("staging")
question = submit_confirmed(row.find_element(By.XPATH, ".//button[text()='Deploy']"))
check("to staging" in question, "the confirmation does not name the environment: " + question)
state, first, final, end = wait_deployment()
report["deploy"] = {"state_seen_first": state, "steps_seen_first": first, "steps_at_end": final}
check(state.startswith("running"), "the deployment was not running when its page opened: " + state)
check(end == "succeeded", "the deployment did not succeed: " + end)
check(any(s.startswith("switch") for s in final), "no switch step in the end: %r" % final)
check(not any(s.startswith("switch") for s in first), "the switch step was there from the start: nothing arrived live")
check(len(final) > len(first), "no step arrived while the page was open")
check("started by ada" in driver.find_element(By.TAG_NAME, "main").text, "the page does not say who started it")
check("as they happen" not in driver.find_element(By.TAG_NAME, "main").text, "the ended deployment still says steps are coming")
shot("deployment")

# A release that fails its health check: its error once, lines kept.
driver.get(BASE + "/apps/hello")
row = driver.find_element(By.XPATH, f"//tr[td/code[text()='{cfg['bad']}']]")
Select(row.find_element(By.NAME, "environment")).select_by_visible_text("staging")
submit_confirmed(row.find_element(By.XPATH, ".//button[text()='Deploy']"))
state, first, final, end = wait_deployment()
check(end == "failed", "the bad release did not fail: " + end)
error = driver.find_element(By.ID, "error")
check(error.is_displayed(), "the error is not shown")
check(error.tag_name == "pre" and "\n" in error.text, "the error lost its lines: %r" % error.text)
main = driver.find_element(By.TAG_NAME, "main").text
check(main.count("unhealthy on purpose") == 1, "the error is not shown exactly once:\n" + main)
report["failed"] = {"steps_at_end": final, "error": error.text}
driver.get(BASE + "/apps/hello")
row = driver.find_element(By.XPATH, f"//tr[td/code[text()='{cfg['bad']}']]")
check("never went live" in row.text, "the bad release is not marked: " + row.text)
check(not row.find_elements(By.TAG_NAME, "button"), "the bad release is still offered: " + row.text)
shot("app")

# A preview, started through the API with the session (and its CSRF
# header): its page shows Continue once it pauses, live.
csrf = driver.find_element(By.CSS_SELECTOR, "header input[name=csrf]").get_attribute("value")
status, text = fetch("POST", "/api/v1/apps/hello/deployments",
                     json.dumps({"release": cfg["v2"], "environment": "staging", "preview": True}),
                     {"Content-Type": "application/json", "X-CSRF-Token": csrf})
check(status == 202, "the preview did not start: %s %s" % (status, text[:300]))
driver.get(BASE + "/deployments/%d" % json.loads(text)["id"])
try:
    button = WebDriverWait(driver, 60).until(
        EC.element_to_be_clickable((By.XPATH, "//button[text()='Continue']")))
except TimeoutException:
    fail("the paused preview offers no Continue: " + driver.find_element(By.TAG_NAME, "main").text)
check(driver.find_elements(By.XPATH, "//button[text()='Abort']"), "the paused preview offers no Abort")
question = submit_confirmed(button)
check("live" in question and "staging" in question, "the confirmation does not say what happens: " + question)
state, first, final, end = wait_deployment()
check(end == "succeeded", "the continued preview did not succeed: " + end)
check(any(s.startswith("switch") for s in final), "no switch after the preview: %r" % final)

# A forged form (no CSRF token), sent by a page of this very site.
status, text = fetch("POST", "/apps/hello/rollback", "environment=production&csrf=forged",
                     {"Content-Type": "application/x-www-form-urlencoded"})
check(status == 403 and "CSRF" in text, "a forged form was not refused: %s %s" % (status, text[:200]))
# And the API refuses a cookie-authenticated change without the header.
status, text = fetch("POST", "/api/v1/apps/hello/rollback", '{"environment":"production"}',
                     {"Content-Type": "application/json"})
check(status == 403 and "X-CSRF-Token" in text, "the API took a change without its CSRF header: %s %s" % (status, text[:200]))

# Flip a flag.
driver.get(BASE + "/flags")
flag_row = driver.find_element(By.XPATH, "//tr[td/code[text()='new-checkout']]")
for words in ["Users: alice, bob", "country IN [de, fr]", "30 % of them, sticky on userId", "blue weight 1 (25 %)", "green weight 3 (75 %)"]:
    check(words in flag_row.text, "the flag's rule is not shown whole (%r):\n%s" % (words, flag_row.text))
submit_confirmed(flag_row.find_element(By.XPATH, ".//button[text()='Turn on']"))
wait.until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "p.notice"), "new-checkout is now on"))
shot("flags")

# Roll production back in one click.
driver.get(BASE + "/apps/hello")
button = driver.find_element(By.XPATH, "//button[text()='Roll back production']")
submit_confirmed(button)
state, first, final, end = wait_deployment()
check(end == "succeeded", "the rollback did not succeed: " + end)
report["rollback"] = {"steps_at_end": final}
driver.get(BASE + "/")
release_ids_on_one_line("the overview, after ada's rollback")

driver.get(BASE + "/audit")
audit = driver.find_element(By.TAG_NAME, "table").text
for action in ["deployment.create", "deployment.rollback", "deployment.continue", "flag.enable", "flag.update"]:
    check(action in audit, action + " is not in the audit log")
check("ada" in audit, "the audit log does not name ada")
check("enabled: false → true" in audit, "a flag change does not read as before → after:\n" + audit)
check('{"' not in audit, "the audit log shows raw JSON:\n" + audit)
shot("audit")
Select(driver.find_element(By.ID, "filter-actor")).select_by_visible_text("ada")
Select(driver.find_element(By.ID, "filter-action")).select_by_visible_text("deployment.* (all)")
driver.find_element(By.XPATH, "//button[text()='Show']").click()
wait.until(EC.url_contains("actor=ada"))
rows = driver.find_elements(By.CSS_SELECTOR, "table tbody tr")
check(len(rows) == 5, "ada's deployments are not the 5 rows shown: %r" % [r.text for r in rows])
check(all(r.find_elements(By.XPATH, "td[2][text()='ada']") for r in rows), "a row by someone else")
check(all(r.find_element(By.XPATH, "td[3]").text.startswith("deployment.") for r in rows), "a row of another action")

# On a phone.
driver.set_window_size(390, 844)
driver.get(BASE + "/")
release_ids_on_one_line("the overview on a phone")
driver.get(BASE + "/apps/hello")
overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
check(overflow <= 1, "the app page is wider than a phone screen by %spx" % overflow)
shot("app-phone")
driver.set_window_size(1280, 900)

# Log out.
driver.find_element(By.XPATH, "//button[text()='Log out']").click()
wait.until(EC.url_contains("/login"))
check("You are logged out." in driver.page_source, "logging out does not say so")

# --- a viewer ---
log_in("vic", cfg["vic"])
driver.get(BASE + "/apps/hello")
buttons = [b.text for b in driver.find_elements(By.TAG_NAME, "button")]
check(buttons == ["Log out"], "a viewer is offered actions: %r" % buttons)
csrf = driver.find_element(By.CSS_SELECTOR, "header input[name=csrf]").get_attribute("value")
status, text = fetch("POST", "/api/v1/apps/hello/rollback", '{"environment":"production"}',
                     {"Content-Type": "application/json", "X-CSRF-Token": csrf})
check(status == 403 and '"forbidden"' in text, "the API let a viewer roll back: %s %s" % (status, text[:200]))
report["viewer_api"] = status

driver.quit()
print(json.dumps({"ok": True, **report}), flush=True)
