// Sign-in: exchange a username and password for a token (POST /auth/token) and keep it for this tab only.
const TOKEN_KEY = 'tidings.token';
const form = document.getElementById('login-form');
const error = document.getElementById('login-error');

const reason = new URLSearchParams(location.search).get('reason');
if (reason) {
  error.textContent = `Please sign in again (${reason}).`;
  error.hidden = false;
}

function nextUrl() {
  const next = new URLSearchParams(location.search).get('next') || '/dashboard';
  // Only same-site paths: never redirect to another origin.
  return next.startsWith('/') && !next.startsWith('//') ? next : '/dashboard';
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  error.hidden = true;
  const button = form.querySelector('button');
  button.disabled = true;
  try {
    const body = new URLSearchParams({
      username: form.username.value.trim(),
      password: form.password.value,
    });
    const response = await fetch('/auth/token', { method: 'POST', body });
    if (!response.ok) {
      const detail = await response.json().catch(() => ({}));
      throw new Error(detail.detail || `Sign-in failed (${response.status})`);
    }
    const { access_token: token } = await response.json();
    sessionStorage.setItem(TOKEN_KEY, token);
    location.assign(nextUrl());
  } catch (err) {
    error.textContent = err.message;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
});
