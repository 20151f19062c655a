/* swarmwatch dashboard: fleet overview, alerts, cluster health and per-node charts (uPlot).
   No build step: plain ES2017 served as is. Data from /api/*, live updates from /ws. */
(() => {
  'use strict';

  // ---------- access token (#token=... once, then kept for the tab) ----------
  // Only in the fragment, which browsers never send to the server, and removed from the address bar at once;
  // the server accepts tokens in headers only (Authorization, or the WebSocket subprotocol below).
  const frag = new URLSearchParams(location.hash.replace(/^#/, ''));
  let token = frag.get('token') || sessionStorage.getItem('sw_token') || '';
  if (frag.get('token')) {
    sessionStorage.setItem('sw_token', token);
    history.replaceState(null, '', location.pathname + location.search);
  }
  const headers = () => (token ? { Authorization: 'Bearer ' + token } : {});
  const b64url = (s) => btoa(String.fromCharCode(...new TextEncoder().encode(s))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');

  async function api(path) {
    const r = await fetch(path, { headers: headers(), cache: 'no-store' });
    if (r.status === 401) {
      const t = window.prompt('This swarmwatch API needs an access token:');
      if (t) { token = t; sessionStorage.setItem('sw_token', t); return api(path); }
      throw new Error('unauthorised');
    }
    if (!r.ok) throw new Error(r.status + ' ' + path);
    return r.json();
  }

  // ---------- helpers ----------
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  const STATUS_RANK = { unresponsive: 0, critical: 1, warning: 2, ok: 3 };
  const PALETTE = ['#58a6ff', '#3fb950', '#d29922', '#f85149', '#a371f7', '#39c5cf', '#ff7b72', '#e3b341'];
  const ROW = 34;
  const now = () => (S.at ? S.at.until : Date.now() / 1000);

  function ago(ts) {
    if (!ts) return '–';
    const d = Math.max(0, now() - ts);
    if (d < 60) return Math.round(d) + 's';
    if (d < 3600) return Math.round(d / 60) + 'm';
    if (d < 86400) return Math.round(d / 3600) + 'h';
    return Math.round(d / 86400) + 'd';
  }
  function fmtBytes(v) {
    if (v == null) return '–';
    const u = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0; let x = Math.abs(v);
    while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
    return (v < 0 ? '-' : '') + x.toFixed(x < 10 && i ? 1 : 0) + ' ' + u[i];
  }
  function fmt(v, unit) {
    if (v == null || Number.isNaN(v)) return '–';
    if (unit === 'B/s') return fmtBytes(v) + '/s';
    if (unit === '%') return v.toFixed(v < 10 ? 1 : 0) + '%';
    if (unit === 'ms') return v.toFixed(v < 10 ? 1 : 0) + ' ms';
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (Math.abs(v) >= 1e3) return (v / 1e3).toFixed(1) + 'k';
    return (Math.round(v * 100) / 100).toString();
  }
  function heat(frac) { // 0 green -> 0.5 amber -> 1 red
    const f = Math.max(0, Math.min(1, frac));
    const hue = 130 - 130 * f;
    return `hsl(${hue}, 62%, ${42 + 6 * (1 - Math.abs(f - 0.5) * 2)}%)`;
  }

  // ---------- state ----------
  const S = {
    nodes: [], view: [], fleet: null, sort: 'status', dir: 1, status: '', cluster: '', q: '',
    sel: null, detail: null, heatMode: 'status', alertMode: 'active', alerts: [],
    charts: [], healthPlot: null, healthCluster: '', healthData: [[], []], ws: null, alertBuf: null,
    at: null, snap: null, // time travel: {since, until} in UNIX s, and the snapshot of the fleet then
  };

  // ---------- time travel: ?since=...&until=...&cluster=...&node=... reproduces a past view ----------
  const isoUTC = (t) => new Date(t * 1000).toISOString().replace(/\.000Z$/, 'Z');
  function parseT(v) {
    if (v == null || v === '') return null;
    if (/^-?\d+(\.\d+)?$/.test(v)) return Number(v);
    const ms = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(v) ? v : v + 'Z');
    return Number.isNaN(ms) ? null : ms / 1000;
  }
  function readUrl() {
    const p = new URLSearchParams(location.search);
    const since = parseT(p.get('since')); const until = parseT(p.get('until'));
    S.at = since != null && until != null && since < until ? { since, until } : null;
    S.cluster = p.get('cluster') || '';
    S.urlNode = p.get('node') || '';
  }
  function writeUrl() {
    const p = new URLSearchParams();
    if (S.at) { p.set('since', isoUTC(S.at.since)); p.set('until', isoUTC(S.at.until)); }
    if (S.cluster) p.set('cluster', S.cluster);
    if (S.sel) p.set('node', S.sel.slice(S.sel.indexOf('/') + 1));
    const qs = [...p].map(([k, v]) => k + '=' + encodeURIComponent(v).replace(/%3A/gi, ':')).join('&'); // readable times
    history.replaceState(null, '', location.pathname + (qs ? '?' + qs : ''));
  }
  function showTravel() {
    document.body.classList.toggle('past', !!S.at);
    $('tt-banner').hidden = !S.at;
    if (S.at) {
      $('tt-text').textContent = `${isoUTC(S.at.since).replace('T', ' ')} → ${isoUTC(S.at.until).replace('T', ' ')}`;
      $('range').value = 'custom'; $('custom').hidden = false;
      $('t-from').value = isoUTC(S.at.since).slice(0, 19); $('t-to').value = isoUTC(S.at.until).slice(0, 19);
    } else { $('range').value = ''; $('custom').hidden = true; }
  }
  function travel(at) {
    S.at = at; S.snap = null; S.sel = null; S.detail = null; S.healthCluster = '';
    showTravel(); writeUrl();
    loadFleet().then(() => { loadHealth(); loadAlerts(); });
  }
  $('range').addEventListener('change', (e) => {
    const v = e.target.value;
    if (v === 'custom') {
      $('custom').hidden = false;
      const u = S.at ? S.at.until : Date.now() / 1000;
      $('t-to').value = isoUTC(u).slice(0, 19); $('t-from').value = isoUTC(u - 3600).slice(0, 19);
      return;
    }
    if (!v) { travel(null); return; }
    const span = { '1h': 3600, '6h': 21600, '24h': 86400 }[v];
    const u = Math.floor(Date.now() / 1000);
    travel({ since: u - span, until: u });
  });
  $('t-go').addEventListener('click', () => {
    const since = parseT($('t-from').value); const until = parseT($('t-to').value);
    if (since == null || until == null || since >= until) { $('tt-text').textContent = 'pick a start before the end'; return; }
    travel({ since, until });
  });

  // ---------- fleet table (virtualised) ----------
  const COLS = [
    { key: 'status', label: '', cls: 'c-dot' },
    { key: 'node', label: 'node', cls: 'c-node' },
    { key: 'cluster', label: 'cluster', cls: 'c-cluster' },
    { key: 'cpu', label: 'cpu', cls: 'c-cpu', bar: true },
    { key: 'mem', label: 'mem', cls: 'c-mem', bar: true },
    { key: 'disk', label: 'disk', cls: 'c-disk', bar: true },
    { key: 'gpu', label: 'gpu', cls: 'c-gpu', bar: true },
    { key: 'latency', label: 'latency', cls: 'c-latency' },
    { key: 'trust', label: 'trust', cls: 'c-trust' },
    { key: 'health', label: 'health', cls: 'c-health' },
    { key: 'last_seen', label: 'seen', cls: 'c-seen' },
  ];
  const thead = $('thead');
  thead.innerHTML = COLS.map((c) => `<span class="${c.cls}" data-key="${c.key}" role="columnheader">${c.label}</span>`).join('');
  thead.addEventListener('click', (e) => {
    const k = e.target.dataset && e.target.dataset.key;
    if (!k) return;
    if (S.sort === k) S.dir = -S.dir; else { S.sort = k; S.dir = 1; }
    applyView();
  });

  const tbody = $('tbody');
  const spacer = $('spacer');
  const pool = [];
  tbody.addEventListener('scroll', () => requestAnimationFrame(renderRows), { passive: true });
  tbody.addEventListener('click', (e) => {
    const tr = e.target.closest('.tr');
    if (tr && tr.dataset.i != null) { const n = S.view[+tr.dataset.i]; if (n) selectNode(n.cluster, n.node); }
  });

  function cmp(a, b) {
    const k = S.sort;
    let r;
    if (k === 'status') r = STATUS_RANK[a.status] - STATUS_RANK[b.status];
    else if (k === 'node' || k === 'cluster') r = a[k] < b[k] ? -1 : a[k] > b[k] ? 1 : 0;
    else {
      const x = a[k]; const y = b[k];
      if (x == null && y == null) r = 0; else if (x == null) return 1; else if (y == null) return -1;
      else r = k === 'trust' || k === 'health' ? x - y : y - x;
    }
    if (r === 0) r = a.node < b.node ? -1 : a.node > b.node ? 1 : 0;
    return r * S.dir;
  }

  function applyView() {
    const q = S.q.toLowerCase();
    S.view = S.nodes.filter((n) => (!S.cluster || n.cluster === S.cluster) && (!S.status || n.status === S.status) && (!q || n.node.toLowerCase().includes(q)));
    S.view.sort(cmp);
    spacer.style.height = S.view.length * ROW + 'px';
    for (const el of thead.children) el.classList.toggle('sorted', el.dataset.key === S.sort);
    $('fleet-count').textContent = S.view.length === S.nodes.length ? `${S.nodes.length} nodes` : `${S.view.length} of ${S.nodes.length} nodes`;
    renderRows();
    renderHeat();
  }

  function cell(c, n) {
    const v = n[c.key];
    if (c.key === 'status') return `<span class="${c.cls}" title="${n.status}"><i class="dot s-${n.status}"></i></span>`;
    if (c.key === 'node') return `<span class="${c.cls} name" title="${esc(n.node)}">${esc(n.node)}</span>`;
    if (c.key === 'cluster') return `<span class="${c.cls}">${esc(n.cluster)}</span>`;
    if (c.bar) {
      if (v == null) return `<span class="${c.cls}">–</span>`;
      const w = Math.max(0, Math.min(100, v));
      const hot = v >= 95 ? 'burn' : v >= 85 ? 'hot' : '';
      return `<span class="${c.cls} bar"><b class="${hot}" style="width:${w}%"></b><em>${v.toFixed(0)}%</em></span>`;
    }
    if (c.key === 'latency') return `<span class="${c.cls}">${fmt(v, 'ms')}</span>`;
    if (c.key === 'trust') return `<span class="${c.cls}">${v == null ? '–' : v.toFixed(2)}</span>`;
    if (c.key === 'health') return `<span class="${c.cls}">${v == null ? '–' : Math.round(v)}</span>`;
    if (c.key === 'last_seen') return `<span class="${c.cls}">${ago(v)}</span>`;
    return `<span class="${c.cls}">${v == null ? '–' : esc(v)}</span>`;
  }

  function renderRows() {
    const h = tbody.clientHeight || 430;
    const first = Math.max(0, Math.floor(tbody.scrollTop / ROW) - 4);
    const count = Math.min(S.view.length - first, Math.ceil(h / ROW) + 8);
    while (pool.length < count) {
      const el = document.createElement('div');
      el.className = 'tr'; el.setAttribute('role', 'row');
      tbody.appendChild(el); pool.push(el);
    }
    for (let j = 0; j < pool.length; j++) {
      const el = pool[j];
      if (j >= count) { el.style.display = 'none'; continue; }
      const i = first + j; const n = S.view[i];
      el.style.display = ''; el.style.top = i * ROW + 'px'; el.dataset.i = i;
      const key = n.cluster + '/' + n.node;
      el.classList.toggle('sel', S.sel === key);
      el.dataset.node = n.node;
      el.innerHTML = COLS.map((c) => cell(c, n)).join('');
    }
  }

  // ---------- node map ----------
  const heatmap = $('heatmap');
  let heatKeys = '';
  heatmap.addEventListener('click', (e) => {
    const i = e.target.dataset && e.target.dataset.i;
    if (i != null) { const n = S.view[+i]; if (n) selectNode(n.cluster, n.node); }
  });
  function renderHeat() {
    const keys = S.view.map((n) => n.cluster + '/' + n.node).join('|');
    if (keys !== heatKeys) {
      heatKeys = keys;
      heatmap.innerHTML = S.view.map((n, i) => `<i data-i="${i}" title="${esc(n.node)}"></i>`).join('');
    }
    const tiles = heatmap.children;
    for (let i = 0; i < S.view.length; i++) {
      const n = S.view[i]; const t = tiles[i];
      let cls = ''; let bg = '';
      if (S.heatMode === 'status') cls = 's-' + n.status;
      else if (S.heatMode === 'trust') bg = n.trust == null ? '' : heat(1 - n.trust);
      else { const v = n[S.heatMode]; bg = v == null ? '' : heat(v / 100); }
      t.className = cls + (S.sel === n.cluster + '/' + n.node ? ' sel' : '');
      t.style.background = bg;
      t.title = `${n.node} · ${n.status}` + (n.cpu != null ? ` · cpu ${n.cpu.toFixed(0)}%` : '') + (n.trust != null ? ` · trust ${n.trust.toFixed(2)}` : '');
    }
  }
  $('heat-mode').addEventListener('click', (e) => {
    const m = e.target.dataset.mode; if (!m) return;
    S.heatMode = m;
    for (const b of e.currentTarget.children) b.classList.toggle('on', b.dataset.mode === m);
    renderHeat();
  });

  // ---------- summary cards and filters ----------
  function renderCards() {
    const f = S.fleet; if (!f) return;
    $('c-total').textContent = f.nodes;
    for (const s of ['ok', 'warning', 'critical', 'unresponsive']) $('c-' + s).textContent = f.status[s];
    $('c-alerts').textContent = f.active_alerts;
    const hs = Object.entries(f.health || {});
    const pick = hs.find(([c]) => c === S.cluster) || hs[0];
    $('c-health').textContent = pick ? Math.round(pick[1]) : '–';
    const sel = $('cluster');
    const have = new Set([...sel.options].map((o) => o.value));
    for (const c of f.clusters) if (!have.has(c)) sel.add(new Option(c, c));
  }
  $('cards').addEventListener('click', (e) => {
    const card = e.target.closest('.card'); if (!card || card.classList.contains('static')) return;
    S.status = S.status === card.dataset.status ? '' : card.dataset.status;
    for (const c of $('cards').children) c.classList.toggle('selected', !!S.status && c.dataset.status === S.status);
    applyView();
  });
  $('cluster').addEventListener('change', (e) => { S.cluster = e.target.value; applyView(); renderCards(); loadHealth(); writeUrl(); });
  let searchTimer = 0;
  $('search').addEventListener('input', (e) => { clearTimeout(searchTimer); searchTimer = setTimeout(() => { S.q = e.target.value; applyView(); }, 120); });

  async function loadFleet() {
    try {
      let r;
      if (S.at) {
        const at = S.at;
        r = await api(`api/history/snapshot?since=${at.since}&until=${at.until}`);
        if (S.at !== at) return;
        S.snap = r;
      } else r = await api('api/nodes?limit=10000');
      S.nodes = r.items; S.fleet = r.fleet;
      renderCards(); applyView();
      if (S.urlNode) {
        const n = S.nodes.find((x) => x.node === S.urlNode && (!S.cluster || x.cluster === S.cluster));
        S.urlNode = '';
        if (n) { selectNode(n.cluster, n.node); return; }
      }
      if (!S.sel && S.view.length) selectNode(S.view[0].cluster, S.view[0].node);
      if (!S.healthCluster && S.fleet.clusters.length) loadHealth();
    } catch (err) { console.warn('fleet', err); }
  }
  let fleetTimer = 0;
  const refreshFleetSoon = () => { clearTimeout(fleetTimer); fleetTimer = setTimeout(loadFleet, 400); };

  // ---------- alerts ----------
  const alertList = $('alert-list');
  function renderAlerts(freshId) {
    const items = S.alerts.slice(0, 200);
    if (!items.length) { alertList.innerHTML = `<li class="empty">${S.alertMode === 'active' ? 'no active alerts' : 'no recent alerts'}</li>`; return; }
    alertList.innerHTML = items.map((a) => {
      const when = a.status === 'resolved' ? a.ended_at || a.started_at : a.started_at;
      return `<li class="${a.severity} ${a.status}${a.id === freshId ? ' fresh' : ''}" data-c="${esc(a.cluster)}" data-n="${esc(a.node)}">` +
        `<span class="sev"></span><div><div class="a-title">${esc(a.rule)} · ${esc(a.node)}</div>` +
        `<div class="a-sum">${esc(a.summary || '')}${a.status === 'resolved' ? ' (resolved)' : ''}</div></div>` +
        `<span class="a-when">${ago(when)} ago</span></li>`;
    }).join('');
  }
  alertList.addEventListener('click', (e) => { const li = e.target.closest('li[data-n]'); if (li) selectNode(li.dataset.c, li.dataset.n); });
  let alertSeq = 0;
  async function loadAlerts() {
    if (S.at) {
      const a = S.snap ? S.snap.alerts : { active: [], events: [] };
      S.alerts = S.alertMode === 'active' ? a.active : a.events;
      renderAlerts();
      return;
    }
    // Live alerts that arrive while the list loads are held and applied on top of it, in order: the list may
    // predate them (they would be lost) or include them (applying one again changes nothing).
    const seq = ++alertSeq;
    if (!S.alertBuf) S.alertBuf = [];
    let r = null;
    try { r = await api('api/alerts?limit=500&active=' + (S.alertMode === 'active')); } catch (err) { console.warn('alerts', err); }
    if (seq !== alertSeq) return; // a newer load is on its way and applies the held alerts
    const held = S.alertBuf; S.alertBuf = null;
    if (S.at) return;
    if (r) { S.alerts = r.items; renderAlerts(); }
    for (const a of held) onAlert(a);
  }
  $('alert-mode').addEventListener('click', (e) => {
    const m = e.target.dataset.mode; if (!m) return;
    S.alertMode = m;
    for (const b of e.currentTarget.children) b.classList.toggle('on', b.dataset.mode === m);
    loadAlerts();
  });
  function onAlert(a) {
    if (S.at) return; // viewing the past: live alerts do not change it
    if (S.alertMode === 'active') {
      S.alerts = S.alerts.filter((x) => x.id !== a.id);
      if (a.status === 'firing') S.alerts.unshift(a);
    } else { S.alerts = S.alerts.filter((x) => !sameEvent(x, a)); S.alerts.unshift(a); }
    renderAlerts(a.id);
    toast(a);
    const n = S.nodes.find((x) => x.cluster === a.cluster && x.node === a.node);
    if (n && a.status === 'firing') {
      const st = a.rule === 'node_unresponsive' || a.kind === 'liveness' ? 'unresponsive' : a.severity === 'critical' ? 'critical' : a.severity === 'warning' ? 'warning' : n.status;
      if (STATUS_RANK[st] < STATUS_RANK[n.status]) { n.status = st; applyView(); }
    }
    if (S.fleet) { S.fleet.active_alerts += a.status === 'firing' ? 1 : -1; S.fleet.active_alerts = Math.max(0, S.fleet.active_alerts); renderCards(); }
    refreshFleetSoon();
  }
  const sameEvent = (x, a) => x.id === a.id && x.status === a.status && x.started_at === a.started_at && x.ended_at === a.ended_at;
  function toast(a) {
    const box = $('toasts');
    const el = document.createElement('div');
    el.className = 'toast ' + (a.status === 'resolved' ? 'resolved' : a.severity);
    el.innerHTML = `<strong>${a.status === 'resolved' ? 'Resolved' : a.severity.toUpperCase()}</strong> ${esc(a.rule)} on ${esc(a.node)}<div class="muted">${esc(a.summary || '')}</div>`;
    box.prepend(el);
    while (box.children.length > 4) box.lastChild.remove();
    setTimeout(() => el.remove(), 7000);
  }

  // ---------- charts ----------
  const GROUPS = [
    { id: 'cpu', title: 'CPU', unit: '%', max: 100, prio: ['cpu.percent', 'cpu.iowait_percent'], match: (k) => k === 'cpu.percent' || k === 'cpu.iowait_percent' },
    { id: 'mem', title: 'Memory', unit: '%', max: 100, prio: ['mem.percent', 'swap.percent'], match: (k) => k === 'mem.percent' || k === 'swap.percent' },
    { id: 'disk', title: 'Disk', unit: '%', max: 100, prio: ['disk.percent', 'disk.busy_percent'], match: (k) => /^disk\.(percent|busy_percent)(\{|$)/.test(k) },
    { id: 'net', title: 'Network', unit: 'B/s', prio: ['net.bytes_recv_per_s', 'net.bytes_sent_per_s'], match: (k) => k === 'net.bytes_recv_per_s' || k === 'net.bytes_sent_per_s' },
    { id: 'gpu', title: 'GPU', unit: '%', max: 100, prio: ['gpu.utilization_percent', 'gpu.memory_percent'], match: (k) => /^gpu\.(utilization_percent|memory_percent)(\{|$)/.test(k) },
    { id: 'latency', title: 'Latency', unit: 'ms', prio: ['net.avg_latency_ms', 'request.latency_ms'], match: (k) => /latency_ms(\{|$)/.test(k) && !k.startsWith('peer.') },
  ];
  const metricOf = (k) => { const i = k.indexOf('{'); return i < 0 ? k : k.slice(0, i); };
  function ordered(g, names) {
    const rank = (k) => { const i = g.prio.indexOf(metricOf(k)); return i < 0 ? g.prio.length : i; };
    return names.slice().sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  }
  const charts = $('charts');
  const chartWidth = (el) => Math.max(200, el.clientWidth - 2);

  function makePlot(el, title, names, unit, max, data, height) {
    const opts = {
      width: chartWidth(el), height: height || 190,
      cursor: { drag: { x: true, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, y: max ? { range: [0, max] } : { range: (u, lo, hi) => [Math.min(0, lo), hi > 0 ? hi * 1.1 : 1] } },
      axes: [
        { stroke: '#8b949e', grid: { stroke: 'rgba(139,148,158,.12)' }, ticks: { stroke: 'rgba(139,148,158,.2)' } },
        { stroke: '#8b949e', grid: { stroke: 'rgba(139,148,158,.12)' }, ticks: { stroke: 'rgba(139,148,158,.2)' }, size: unit === 'B/s' ? 76 : 58, values: (u, vs) => vs.map((v) => fmt(v, unit).replace(/\.0(?=\D|$)/, '')) },
      ],
      series: [{ value: (u, v) => (v == null ? '–' : new Date(v * 1000).toLocaleTimeString()) }].concat(names.map((n, i) => ({
        label: n, stroke: PALETTE[i % PALETTE.length], width: 1.6, points: { show: false },
        fill: names.length === 1 ? PALETTE[0] + '22' : undefined, value: (u, v) => fmt(v, unit), spanGaps: true,
      }))),
    };
    opts.hooks = {
      ready: [showLast],
      setLegend: [(u) => { if (u.legend.idx == null) showLast(u); }],
    };
    return new uPlot(opts, data, el);
  }
  function showLast(plot) { // the legend shows the newest values until the cursor says otherwise
    const n = plot.data && plot.data[0] ? plot.data[0].length : 0;
    if (n) plot.setLegend({ idx: n - 1 }, false);
  }

  function align(seriesMap, names) {
    const ts = new Set();
    for (const n of names) for (const p of seriesMap[n] || []) ts.add(p[0]);
    const xs = [...ts].sort((a, b) => a - b);
    const idx = new Map(xs.map((t, i) => [t, i]));
    const out = [xs];
    for (const n of names) {
      const ys = new Array(xs.length).fill(null);
      for (const p of seriesMap[n] || []) ys[idx.get(p[0])] = p[1];
      out.push(ys);
    }
    return out;
  }

  function destroyCharts() { for (const c of S.charts) if (c.plot) c.plot.destroy(); S.charts = []; charts.innerHTML = ''; }

  async function loadCharts(detail) {
    destroyCharts();
    const base = `api/nodes/${encodeURIComponent(detail.cluster)}/${encodeURIComponent(detail.node)}/history`;
    let avail = detail.history_series || [];
    let hist = { series: {} };
    let range = 'since=1h';
    if (S.at) { // every series of the groups' metrics in the range, then plan from what came back
      range = `since=${S.at.since}&until=${S.at.until}`;
      const qsx = [...new Set(GROUPS.flatMap((g) => g.prio))].map((m) => 'metric=' + encodeURIComponent(m)).join('&');
      hist = await api(`${base}?${range}&${qsx}`);
      avail = Object.keys(hist.series);
    }
    const plan = GROUPS.map((g) => ({ g, names: ordered(g, avail.filter(g.match)).slice(0, 8) }));
    const wanted = plan.flatMap((p) => p.names);
    if (wanted.length && !S.at) {
      const qsx = wanted.map((m) => 'metric=' + encodeURIComponent(m)).join('&');
      hist = await api(`${base}?${range}&${qsx}`);
    }
    if (S.sel !== detail.cluster + '/' + detail.node) return;
    for (const { g, names } of plan) {
      const box = document.createElement('div');
      box.className = 'chart-box'; box.dataset.group = g.id;
      const lastName = names[0];
      const latest = lastName && detail.aggregates[lastName] ? fmt(detail.aggregates[lastName].mean, g.unit) : '';
      box.innerHTML = `<h3><span>${g.title}</span><span class="muted">${latest}</span></h3>`;
      charts.appendChild(box);
      if (!names.length) {
        box.insertAdjacentHTML('beforeend', `<div class="nodata">${g.id === 'gpu' ? 'no GPU reported' : 'no data'}</div>`);
        S.charts.push({ g, names, plot: null, box });
        continue;
      }
      const holder = document.createElement('div'); box.appendChild(holder);
      const data = align(hist.series, names);
      const plot = makePlot(holder, g.title, names, g.unit, g.max, data);
      S.charts.push({ g, names, plot, box, holder, data });
    }
  }

  function onAgg(m) {
    if (S.at || !S.detail || S.sel !== m.cluster + '/' + m.node) return;
    if (S.detail.window_s && m.window_s !== S.detail.window_s) return;
    const cutoff = m.end - 3600;
    for (const c of S.charts) {
      if (!c.plot) continue;
      const d = c.data;
      if (d[0].length && m.end <= d[0][d[0].length - 1]) continue;
      d[0].push(m.end);
      c.names.forEach((n, i) => d[i + 1].push(m.series[n] ? m.series[n].mean : null));
      while (d[0].length && d[0][0] < cutoff) for (const arr of d) arr.shift();
      c.plot.setData(d);
      showLast(c.plot);
      const first = m.series[c.names[0]];
      if (first) c.box.querySelector('h3 .muted').textContent = fmt(first.mean, c.g.unit);
    }
  }

  async function selectNode(cluster, node) {
    const key = cluster + '/' + node;
    S.sel = key; S.detail = null;
    renderRows(); renderHeat();
    $('node-title').textContent = node;
    subscribe(); writeUrl();
    try {
      const d = S.at ? pastDetail(cluster, node) : await api(`api/nodes/${encodeURIComponent(cluster)}/${encodeURIComponent(node)}`);
      if (S.sel !== key) return;
      S.detail = d;
      const b = [`<span class="badge ${d.status}">${d.status}</span>`, `<span class="badge">${esc(d.cluster)}</span>`];
      if (d.trust != null) b.push(`<span class="badge">trust ${d.trust.toFixed(2)}</span>`);
      if (d.health != null) b.push(`<span class="badge">health ${Math.round(d.health)}</span>`);
      if (d.alerts) b.push(`<span class="badge critical">${d.alerts} alert${d.alerts > 1 ? 's' : ''}</span>`);
      if (d.window_s) b.push(`<span class="badge">${d.window_s}s windows</span>`);
      b.push(`<span class="badge">seen ${ago(d.last_seen)} ago</span>`);
      $('node-badges').innerHTML = b.join('');
      await loadCharts(d);
    } catch (err) { console.warn('node', err); }
  }

  function pastDetail(cluster, node) { // a node as the snapshot saw it: no live ring, charts come from the store
    const row = S.nodes.find((x) => x.cluster === cluster && x.node === node) || { cluster, node, status: 'ok' };
    return Object.assign({ aggregates: {}, history_series: [], window_s: null }, row);
  }

  // ---------- cluster health ----------
  async function loadHealth() {
    const f = S.fleet; if (!f) return;
    const cl = S.cluster || Object.keys(f.health || {})[0] || f.clusters[0];
    if (!cl) return;
    S.healthCluster = cl;
    const holder = $('health-chart');
    if (S.at) {
      const pts = (S.snap && S.snap.health[cl]) || [];
      S.healthData = [pts.map((p) => p[0]), pts.map((p) => p[1])];
      $('health-note').textContent = pts.length ? `${cl} · ${Math.round(pts[pts.length - 1][1])} at the end of the range` : `${cl} · no health score in this range`;
      if (S.healthPlot) S.healthPlot.destroy();
      holder.innerHTML = '';
      S.healthPlot = makePlot(holder, 'health', ['overall health'], '', 100, S.healthData, 150);
      return;
    }
    try {
      const r = await api(`api/clusters/${encodeURIComponent(cl)}/health?since=6h`);
      S.healthData = [r.history.map((h) => h.ts), r.history.map((h) => h.overall_health)];
      $('health-note').textContent = `${cl} · now ${Math.round(r.latest.overall_health)} · ${r.latest.peer_count}/${r.latest.expected_peers || '?'} peers`;
    } catch (err) {
      S.healthData = [[], []];
      $('health-note').textContent = `${cl} · no health score yet`;
    }
    if (S.healthPlot) S.healthPlot.destroy();
    holder.innerHTML = '';
    S.healthPlot = makePlot(holder, 'health', ['overall health'], '', 100, S.healthData, 150);
  }
  function onHealth(h) {
    if (S.at) return;
    if (S.fleet) { S.fleet.health[h.cluster] = h.overall_health; renderCards(); }
    if (h.cluster !== S.healthCluster || !S.healthPlot) return;
    const d = S.healthData;
    if (d[0].length && h.ts <= d[0][d[0].length - 1]) return;
    d[0].push(h.ts); d[1].push(h.overall_health);
    if (d[0].length > 2000) { d[0].shift(); d[1].shift(); }
    S.healthPlot.setData(d);
    showLast(S.healthPlot);
    $('health-note').textContent = `${h.cluster} · now ${Math.round(h.overall_health)} · ${h.peer_count}/${h.expected_peers || '?'} peers`;
  }

  // ---------- live WebSocket ----------
  let backoff = 500;
  function subscribe() {
    if (!S.ws || S.ws.readyState !== 1) return;
    const [cluster, node] = S.sel ? S.sel.split('/') : [null, null];
    S.ws.send(JSON.stringify({ subscribe: { types: ['agg', 'alert', 'health', 'trust'], cluster: null, node: node ? node : '__none__' } }));
    S.wsCluster = cluster;
  }
  function connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const base = location.pathname.replace(/[^/]*$/, '');
    const ws = new WebSocket(`${proto}//${location.host}${base}ws`, token ? ['swarmwatch', 'bearer.' + b64url(token)] : ['swarmwatch']);
    S.ws = ws;
    const conn = $('conn');
    ws.onopen = () => { // (re)connected: alerts fired while no WebSocket listened are only in a fresh list
      backoff = 500; conn.className = 'conn live'; $('conn-text').textContent = 'live'; subscribe();
      if (!S.at) { loadAlerts(); refreshFleetSoon(); }
    };
    ws.onclose = () => {
      conn.className = 'conn down'; $('conn-text').textContent = 'reconnecting';
      setTimeout(connect, backoff); backoff = Math.min(backoff * 2, 10000);
    };
    ws.onmessage = (ev) => {
      let m; try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (S.at && m.type !== 'dropped') return; // viewing the past: live updates wait until back to live
      if (m.type === 'alert') { if (S.alertBuf) S.alertBuf.push(m.data); else onAlert(m.data); }
      else if (m.type === 'agg') { if (S.wsCluster == null || m.data.cluster === S.wsCluster) onAgg(m.data); }
      else if (m.type === 'health') onHealth(m.data);
      else if (m.type === 'trust') refreshFleetSoon();
      else if (m.type === 'dropped') { console.warn('server dropped', m.data.count, 'messages for this slow client'); if (!S.at) loadAlerts(); }
      else if (m.type === 'hello') { S.fleet = Object.assign(S.fleet || {}, m.data); renderCards(); }
    };
  }

  // ---------- resize ----------
  const ro = new ResizeObserver(() => {
    for (const c of S.charts) if (c.plot) c.plot.setSize({ width: chartWidth(c.holder), height: 190 });
    if (S.healthPlot) S.healthPlot.setSize({ width: chartWidth($('health-chart')), height: 150 });
    renderRows();
  });
  ro.observe(document.body);

  // ---------- start ----------
  readUrl();
  showTravel();
  if (S.cluster) { const sel = $('cluster'); sel.add(new Option(S.cluster, S.cluster)); sel.value = S.cluster; }
  loadFleet().then(() => { loadHealth(); loadAlerts(); });
  connect();
  setInterval(() => { if (!S.at) loadFleet(); }, 5000);
  setInterval(() => { if (S.alertMode === 'recent' && !S.at) loadAlerts(); }, 15000);
})();
