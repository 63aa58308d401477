// ward's reviewer page: live updates and times that keep current. The
// page works without it; this only saves reloading.
'use strict';

// "in 9m 12s" / "3m ago" beside every <time data-at>.
function relative(ms) {
  const d = Math.round((ms - Date.now()) / 1000);
  const a = Math.abs(d);
  const parts = a >= 86400 ? [Math.floor(a / 86400) + 'd', Math.floor((a % 86400) / 3600) + 'h']
    : a >= 3600 ? [Math.floor(a / 3600) + 'h', Math.floor((a % 3600) / 60) + 'm']
    : a >= 60 ? [Math.floor(a / 60) + 'm', (a % 60) + 's']
    : [a + 's'];
  return d >= 0 ? 'in ' + parts.join(' ') : parts.join(' ') + ' ago';
}

function tick() {
  for (const t of document.querySelectorAll('time[data-at]')) {
    const at = Number(t.dataset.at);
    t.textContent = relative(at);
  }
}

// Someone is typing in this region: replacing it would lose their words.
function busy(region) {
  for (const f of region.querySelectorAll('textarea, input[type=text]')) {
    if (f.value !== '' || f === document.activeElement) return true;
  }
  return false;
}

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    const r = await fetch(location.href, { credentials: 'same-origin', cache: 'no-store' });
    if (!r.ok) return;
    const fresh = new DOMParser().parseFromString(await r.text(), 'text/html');
    let skipped = false;
    for (const region of document.querySelectorAll('[data-live]')) {
      const next = fresh.getElementById(region.id);
      if (!next) continue;
      if (busy(region)) { skipped = true; continue; }
      region.replaceWith(document.importNode(next, true));
    }
    document.getElementById('stale').hidden = !skipped;
    tick();
  } finally {
    refreshing = false;
  }
}

document.addEventListener('DOMContentLoaded', () => {
  tick();
  setInterval(tick, 1000);
  if (document.querySelector('[data-live]') && 'EventSource' in window) {
    const events = new EventSource('/events');
    events.addEventListener('changed', refresh);
  }
});
