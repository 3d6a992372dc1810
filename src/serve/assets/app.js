// depotai serve: search as you type, and copy buttons. Served as a static file (the
// pages' Content-Security-Policy allows no inline script); it reads only data-
// attributes and never turns them into markup.
(function () {
  'use strict';

  function plural(n, noun) {
    return n + ' ' + noun + (n === 1 ? '' : 's');
  }

  function setupFilter(input) {
    var table = document.getElementById(input.dataset.filter);
    if (!table) return;
    var count = document.getElementById(input.dataset.count);
    var empty = document.getElementById(input.dataset.empty);
    var noun = input.dataset.noun || 'item';
    var rows = Array.prototype.slice.call(table.querySelectorAll('tbody tr[data-search]'));
    var items = rows.filter(function (r) { return !r.dataset.dir; });
    var dirs = rows.filter(function (r) { return r.dataset.dir; });

    function apply() {
      var terms = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      var visible = [];
      items.forEach(function (r) {
        var s = r.dataset.search;
        var hit = terms.every(function (t) { return s.indexOf(t) !== -1; });
        r.hidden = !hit;
        if (hit) { shown++; visible.push(r.dataset.path || ''); }
      });
      // A directory stays while it holds a match (or when its own name matches).
      dirs.forEach(function (d) {
        var prefix = d.dataset.dir;
        var own = terms.length > 0 && terms.every(function (t) { return d.dataset.search.indexOf(t) !== -1; });
        d.hidden = !(terms.length === 0 || own || visible.some(function (p) { return p.indexOf(prefix) === 0; }));
      });
      if (count) {
        count.textContent = terms.length ? shown + ' of ' + plural(items.length, noun) : plural(items.length, noun);
      }
      if (empty) empty.hidden = shown !== 0;
      table.dataset.shown = String(shown);
    }

    // The list's query lives in the address (`/?q=bert`), so a search can be linked.
    var inUrl = input.dataset.noun === 'model';
    if (inUrl) {
      var q = new URLSearchParams(window.location.search).get('q');
      if (q) input.value = q;
    }
    input.addEventListener('input', function () {
      apply();
      if (inUrl && window.history.replaceState) {
        var url = new URL(window.location.href);
        if (input.value) url.searchParams.set('q', input.value);
        else url.searchParams.delete('q');
        window.history.replaceState(null, '', url.pathname + url.search);
      }
    });
    input.addEventListener('keydown', function (ev) {
      if (ev.key === 'Escape') { input.value = ''; apply(); }
      if (ev.key === 'Enter') {
        // One match left: open it.
        var hits = items.filter(function (r) { return !r.hidden; });
        var link = hits.length === 1 && hits[0].querySelector('a[href]');
        if (link) window.location.href = link.getAttribute('href');
      }
    });
    if (input.value) apply();
  }

  function fallbackCopy(text) {
    var ta = document.createElement('textarea');
    ta.value = text;
    ta.setAttribute('readonly', '');
    ta.className = 'offscreen';
    document.body.appendChild(ta);
    ta.select();
    var ok = false;
    try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    document.body.removeChild(ta);
    return ok;
  }

  function flash(button, state) {
    button.dataset.state = state;
    button.textContent = state === 'copied' ? 'Copied' : 'Press Ctrl+C';
    clearTimeout(button._timer);
    button._timer = setTimeout(function () {
      button.textContent = 'Copy';
      delete button.dataset.state;
    }, 1600);
  }

  function copy(button) {
    var text = button.dataset.copy;
    // What was copied last, for people who script the page (and for its tests).
    document.body.dataset.copied = text;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { flash(button, 'copied'); },
        function () { flash(button, fallbackCopy(text) ? 'copied' : 'failed'); }
      );
    } else {
      flash(button, fallbackCopy(text) ? 'copied' : 'failed');
    }
  }

  document.addEventListener('click', function (ev) {
    var b = ev.target.closest ? ev.target.closest('button[data-copy]') : null;
    if (b) copy(b);
  });

  document.addEventListener('keydown', function (ev) {
    // "/" jumps to the search box, as on most code sites.
    if (ev.key !== '/' || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var t = ev.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
    var box = document.querySelector('input[data-filter]');
    if (box) { ev.preventDefault(); box.focus(); box.select(); }
  });

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll('input[data-filter]'), setupFilter);
    document.documentElement.dataset.ready = '1';
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
