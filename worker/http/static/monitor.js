// The examiner's monitor: live sessions of this worker pushed over server-sent events
// (GET /v1/monitor/stream), and finished sessions read from the sessions API with the API key.
// The key is asked for once and kept in sessionStorage (this tab only).

const KEY_STORE = 'viva.monitor.key';
const LATENCY_BUDGET_MS = 400; // SPEC.md: turn latency under 400 ms
const FINISHED_SHOWN = 25;
const RESULT_DELAY_MS = 1500; // results are written behind the voice path: look a little later
const RESULT_TRIES = 5;
const STATE_LABELS = {
  connected: 'Connected', away: 'Away (may reconnect)', ended: 'Ending', elsewhere: 'On another worker',
};

const $ = (id) => document.getElementById(id);

// Read by the browser tests; harmless for everyone else.
const debug = { events: [], streamStates: [], opens: 0 };
window.monitorDebug = debug;

let apiKey = sessionStorage.getItem(KEY_STORE);
let source = null; // the EventSource of the live feed
let retryTimer = null;
const live = new Map(); // session_code -> latest summary
const students = new Map(); // session_code -> student name, as seen live (the list API has none)
let selected = null; // the finished session shown in the details panel

class Unauthorized extends Error {}

// --- small helpers ---------------------------------------------------------------------------

function show(id, visible = true) { $(id).hidden = !visible; }

function setStatus(text, tone = 'info') {
  $('status').textContent = text;
  $('status').dataset.tone = tone;
}

function showAlert(text) {
  $('alert').textContent = text;
  show('alert', Boolean(text));
}

function el(tag, className = '', text = '') {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== '') node.textContent = text;
  return node;
}

function title(id) { return id ? id.charAt(0).toUpperCase() + id.slice(1).replace(/_/g, ' ') : ''; }
// Units keep to their numbers (\u00a0: a no-break space).
function ms(value) { return value === null || value === undefined ? '–' : `${Math.round(value)}\u00a0ms`; }

// The API writes UTC; a timestamp without an offset is UTC too.
function parseUtc(iso) {
  return new Date(/(?:[zZ]|[+-]\d\d:\d\d)$/.test(iso) ? iso : `${iso}Z`);
}

function when(iso) {
  if (!iso) return '';
  return parseUtc(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

function duration(startIso, endIso) {
  if (!startIso || !endIso) return '';
  const seconds = Math.max(0, Math.round((parseUtc(endIso) - parseUtc(startIso)) / 1000));
  return seconds >= 60 ? `${Math.floor(seconds / 60)}\u00a0min ${seconds % 60}\u00a0s` : `${seconds}\u00a0s`;
}

async function api(path) {
  const res = await fetch(path, { headers: { Authorization: `Bearer ${apiKey}` } });
  if (res.status === 401) throw new Unauthorized('the API key was not accepted');
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((body.error && body.error.message) || `HTTP ${res.status}`);
  return body;
}

// --- the key ---------------------------------------------------------------------------------

function askForKey(message = '') {
  closeStream();
  apiKey = null;
  sessionStorage.removeItem(KEY_STORE);
  show('board', false);
  show('sign-out', false);
  show('login');
  showAlert(message);
  setStatus('Enter the examiner API key to open the monitor.');
  setStreamState('idle', 'Not connected');
  $('api-key').focus();
}

async function onKeySubmit(event) {
  event.preventDefault();
  const given = $('api-key').value.trim();
  if (!given) return;
  apiKey = given;
  $('key-submit').disabled = true;
  try {
    await open();
  } finally {
    $('key-submit').disabled = false;
  }
}

// Check the key with one API call (EventSource cannot see a 401), then open the board.
async function open() {
  showAlert('');
  setStatus('Checking the key…');
  try {
    await loadFinished();
  } catch (err) {
    if (err instanceof Unauthorized) {
      askForKey('Wrong API key: the worker answered 401 Unauthorized. Check the key and try again.');
    } else {
      setStatus(`Could not reach the worker: ${err.message}`, 'error');
    }
    return;
  }
  sessionStorage.setItem(KEY_STORE, apiKey);
  $('api-key').value = '';
  show('login', false);
  show('board');
  show('sign-out');
  openStream();
}

// --- the live feed ---------------------------------------------------------------------------

function setStreamState(state, text) {
  $('stream-state').dataset.state = state;
  $('stream-state-text').textContent = text;
  $('live').classList.toggle('stale', state !== 'live'); // rows may be out of date meanwhile
  debug.streamStates.push(state);
}

function closeStream() {
  clearTimeout(retryTimer);
  if (source) source.close();
  source = null;
}

function openStream() {
  closeStream();
  setStreamState('connecting', 'Connecting…');
  const es = new EventSource(`/v1/monitor/stream?key=${encodeURIComponent(apiKey)}`);
  source = es;
  debug.opens += 1;
  es.onopen = () => {
    setStreamState('live', 'Live');
    setStatus('Live: sessions update as they happen.', 'ok');
  };
  es.addEventListener('sessions', (e) => {
    debug.events.push('sessions');
    live.clear();
    for (const s of JSON.parse(e.data).sessions) live.set(s.session_code, s);
    renderLive();
  });
  es.addEventListener('update', (e) => onUpdate(JSON.parse(e.data)));
  es.addEventListener('shutdown', () => {
    debug.events.push('shutdown');
    setStreamState('down', 'Worker restarting');
    setStatus('The worker is shutting down; the monitor reconnects when it is back.', 'warn');
  });
  es.onerror = () => {
    if (es !== source) return;
    if (es.readyState === EventSource.CONNECTING) {
      // The browser reconnects by itself (after the server's `retry`, 3 s).
      setStreamState('reconnecting', 'Reconnecting…');
      setStatus('Lost the live feed — reconnecting…', 'warn');
      return;
    }
    onStreamClosed(); // refused outright (a 401, a 503): the browser will not retry
  };
}

async function onStreamClosed() {
  setStreamState('down', 'Disconnected');
  try {
    await api('/v1/sessions?status=in_progress');
  } catch (err) {
    if (err instanceof Unauthorized) {
      askForKey('The API key is no longer accepted (401 Unauthorized). Enter the current key.');
      return;
    }
  }
  setStatus('The live feed was refused; trying again in 5 s…', 'warn');
  retryTimer = setTimeout(openStream, 5000);
}

function onUpdate(update) {
  debug.events.push(`update:${update.state}`);
  if (update.state === 'gone') {
    live.delete(update.session_code);
    // It just finished: its result lands in the database a moment later.
    setTimeout(() => loadFinished().catch(() => {}), RESULT_DELAY_MS);
  } else {
    live.set(update.session_code, update);
  }
  renderLive();
}

// --- live sessions table ---------------------------------------------------------------------

function renderLive() {
  const body = $('live-rows');
  const keep = new Set(live.keys());
  for (const tr of [...body.rows]) if (!keep.has(tr.dataset.code)) tr.remove();
  for (const s of live.values()) {
    if (s.student) students.set(s.session_code, s.student);
    let tr = body.querySelector(`tr[data-code="${CSS.escape(s.session_code)}"]`);
    if (!tr) {
      tr = el('tr');
      tr.dataset.code = s.session_code;
      body.append(tr);
    }
    fillRow(tr, s);
  }
  $('live-count').textContent = live.size ? `(${live.size})` : '';
  show('live-empty', live.size === 0);
  show('live', live.size > 0);
}

function fillRow(tr, s) {
  tr.dataset.state = s.state;
  const who = el('td', 'student');
  who.append(el('span', 'name', s.student || '—'), el('span', 'code', s.session_code));
  const question = el('td', 'question');
  question.append(el('span', 'q', s.question_number ? `${s.question_number} / ${s.question_count}`
    : `– / ${s.question_count}`), el('span', 'sub', `${s.answered} answered`));
  const state = el('td', 'state');
  state.append(el('span', `badge ${s.state}`, STATE_LABELS[s.state] || s.state));
  // Which worker serves it, for the sessions another worker holds (this one's need no label).
  if (s.state === 'elsewhere' && s.worker != null) state.append(el('span', 'sub', ` worker ${s.worker}`));
  const last = el('td', 'num latency', ms(s.last_latency_ms));
  if (s.last_latency_ms > LATENCY_BUDGET_MS) last.classList.add('over');
  const spark = el('td', 'spark');
  spark.append(sparkline(s.latencies_ms || []));
  tr.replaceChildren(who, el('td', 'college', title(s.college_type)), question, state, last, spark);
}

// An inline SVG of the recent turn latencies, with the 400 ms budget as a dashed line.
function sparkline(values) {
  const W = 160;
  const H = 34;
  const PAD = 4;
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('width', W);
  svg.setAttribute('height', H);
  svg.setAttribute('class', 'sparkline');
  svg.setAttribute('role', 'img');
  const label = values.length
    ? `Turn latencies: ${values.map((v) => Math.round(v)).join(', ')} ms`
    : 'No turns yet';
  svg.setAttribute('aria-label', label);
  const add = (tag, attrs) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    svg.append(node);
    return node;
  };
  const top = Math.max(LATENCY_BUDGET_MS * 1.25, ...values);
  const y = (v) => (H - PAD - (v / top) * (H - 2 * PAD)).toFixed(1);
  const x = (i) => (values.length < 2 ? W - PAD : PAD + (i * (W - 2 * PAD)) / (values.length - 1)).toFixed(1);
  add('line', { x1: PAD, x2: W - PAD, y1: y(LATENCY_BUDGET_MS), y2: y(LATENCY_BUDGET_MS), class: 'budget' });
  if (!values.length) return svg;
  if (values.length > 1) {
    add('polyline', { points: values.map((v, i) => `${x(i)},${y(v)}`).join(' '), class: 'trace' });
  }
  const lastValue = values[values.length - 1];
  add('circle', {
    cx: x(values.length - 1), cy: y(lastValue), r: 2.8,
    class: lastValue > LATENCY_BUDGET_MS ? 'last over' : 'last',
  });
  return svg;
}

// --- finished sessions -----------------------------------------------------------------------

async function loadFinished() {
  const [completed, terminated] = await Promise.all([
    api('/v1/sessions?status=completed'),
    api('/v1/sessions?status=terminated'),
  ]);
  const all = [...completed.sessions, ...terminated.sessions];
  all.sort((a, b) => (b.end_time || '').localeCompare(a.end_time || ''));
  renderFinished(all.slice(0, FINISHED_SHOWN));
}

function renderFinished(sessions) {
  const list = $('finished');
  list.replaceChildren(...sessions.map((s) => {
    const li = el('li');
    const button = el('button', 'finished-item');
    button.type = 'button';
    button.dataset.code = s.session_code;
    button.setAttribute('aria-pressed', String(s.session_code === selected));
    const head = el('span', 'line1');
    const name = students.get(s.session_code);
    head.append(el('span', 'code', s.session_code), el('span', `badge ${s.status}`, title(s.status)));
    const facts = [title(s.college_type), `${s.questions_answered} / ${s.total_questions} answered`];
    button.append(head);
    if (name) button.append(el('span', 'line2 name', name));
    button.append(el('span', 'line2', facts.join(' · ')), el('span', 'line3', when(s.end_time)));
    button.addEventListener('click', () => showDetail(s.session_code));
    li.append(button);
    return li;
  }));
  show('finished-empty', sessions.length === 0);
}

async function showDetail(code, attempt = 1) {
  selected = code;
  for (const b of $('finished').querySelectorAll('button')) {
    b.setAttribute('aria-pressed', String(b.dataset.code === code));
  }
  $('detail-title').textContent = `Session ${code}`;
  let s;
  try {
    s = await api(`/v1/sessions/${encodeURIComponent(code)}`);
  } catch (err) {
    if (err instanceof Unauthorized) { askForKey('The API key is no longer accepted (401).'); return; }
    showAlert(`Could not load ${code}: ${err.message}`);
    return;
  }
  if (selected !== code) return; // another one was chosen meanwhile
  renderDetail(s);
  // The result is written moments after the session ends: look again a few times.
  if (!s.result && attempt < RESULT_TRIES) {
    setTimeout(() => { if (selected === code) showDetail(code, attempt + 1); }, RESULT_DELAY_MS);
  }
}

function renderDetail(s) {
  show('detail-placeholder', false);
  show('detail-body');
  const name = students.get(s.session_code);
  const took = duration(s.start_time, s.end_time);
  $('detail-meta').textContent = [
    name, title(s.status), `${title(s.college_type)} / ${s.scenario_id}`,
    `${s.questions_answered} of ${s.total_questions} answered`,
    s.end_time ? `ended ${when(s.end_time)}` : '', took ? `took ${took}` : '',
  ].filter(Boolean).join(' · ');

  const r = s.result;
  const details = (r && r.details) || {};
  show('detail-result', Boolean(r));
  if (r) {
    $('detail-grade').textContent = r.grade;
    $('detail-score').textContent = `${r.total_score} / ${r.max_score}`;
    $('detail-pct').textContent = `${Number(r.percentage).toFixed(1)}\u00a0%`;
    $('detail-pass').textContent = r.passed ? 'Passed' : 'Not passed';
    $('detail-result').dataset.passed = String(r.passed);
    const lat = details.latency || {};
    $('detail-latency').textContent = lat.turns
      ? `p50 ${ms(lat.p50_ms)} · max ${ms(lat.max_ms)}`
      : `avg ${ms(s.avg_latency_ms)} · max ${ms(s.max_latency_ms)}`;
  }
  const reason = details.end_reason ? `Ended: ${details.end_reason}.` : '';
  $('detail-reason').textContent = r ? reason : 'No result yet: it is written moments after the session ends.';

  const questions = new Map((details.questions || []).map((q) => [q.question_number, q.question]));
  $('detail-answers').replaceChildren(...s.answers.map((a) => answerRow(a, questions)));
  show('detail-no-answers', s.answers.length === 0);
}

function answerRow(a, questions) {
  const tr = el('tr');
  const text = el('td', 'transcript');
  const asked = questions.get(a.question_number);
  if (asked) text.append(el('span', 'asked', asked));
  text.append(el('span', 'said', a.transcript || '(nothing heard)'));
  const ev = a.evaluation;
  const score = el('td', 'num score', ev ? `${ev.score} / ${ev.max_score}` : '–');
  const feedback = el('td', 'feedback');
  if (ev) {
    feedback.append(el('span', `badge ${ev.feedback_type}`, ev.feedback_type));
    if (ev.feedback) feedback.append(el('span', 'text', ev.feedback));
  } else {
    feedback.append(el('span', 'text', 'Not scored yet'));
  }
  tr.append(el('td', 'qn', String(a.question_number)), text, score, feedback,
    el('td', 'num', ev ? ms(ev.latency_ms) : '–'));
  return tr;
}

// --- start -----------------------------------------------------------------------------------

function main() {
  $('key-form').addEventListener('submit', onKeySubmit);
  $('sign-out').addEventListener('click', () => askForKey(''));
  $('refresh').addEventListener('click', () => loadFinished().catch((err) => {
    if (err instanceof Unauthorized) askForKey('The API key is no longer accepted (401).');
    else showAlert(`Could not load finished sessions: ${err.message}`);
  }));
  renderLive();
  if (apiKey) open();
  else askForKey();
}

main();
