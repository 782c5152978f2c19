// The student's viva page: get a session (a link with ?code=&token=, or a practice form),
// open the microphone, stream 16 kHz PCM16 over the session WebSocket, play the examiner's
// audio and show what happens. The wire protocol is docs/protocol.md (version 1).

import { openAudio } from './audio.js';

const PROTOCOL_VERSION = '1';
let graceMs = 30000; // reconnect grace period; session.created says the server's own
const PING_EVERY_MS = 5000;
const SILENT_LINK_MS = 20000; // nothing at all from the server for this long: the link is dead
// Close codes after which reconnecting with the same token cannot help (docs/protocol.md).
const FINAL_CLOSE = new Set([1000, 1001, 1008, 4001]);
const FINAL_ERRORS = new Set(['unauthorized', 'token_expired', 'session_not_found', 'session_closed']);
const MIC_MESSAGES = {
  NotAllowedError: 'Microphone access was denied. Allow the microphone for this page ' +
    '(the icon in the address bar), then reload to start the viva.',
  SecurityError: 'Microphone access was denied. Allow the microphone for this page, then reload.',
  NotFoundError: 'No microphone was found. Connect one, then reload the page.',
  NotReadableError: 'The microphone is in use by another application. Close it, then reload.',
};
const END_MESSAGES = {
  completed: 'The viva is complete. Thank you!',
  terminated: 'The viva was ended.',
  timeout: 'The viva ended: the time limit was reached.',
  server_shutdown: 'The viva ended: the examiner service is restarting.',
};

const $ = (id) => document.getElementById(id);

// Read by the browser tests; harmless for everyone else.
const debug = {
  bytesReceived: 0, framesPlayed: 0, framesSent: 0, connects: 0, playing: false,
  events: [], statusLog: [], latencies: [],
  dropConnection: () => session && session.abandon('simulated network drop'),
};
window.vivaDebug = debug;

let session = null; // the one live session of this page

function show(id, visible = true) { $(id).hidden = !visible; }

function setStatus(text, tone = 'info') {
  const el = $('status');
  el.textContent = text;
  el.dataset.tone = tone;
  debug.statusLog.push(text);
}

function showAlert(text) {
  $('alert').textContent = text;
  show('alert', Boolean(text));
}

function span(className, text) {
  const el = document.createElement('span');
  el.className = className;
  el.textContent = text;
  return el;
}

// One transcript row; returns its text element (examiner captions grow delta by delta).
function addLine(who, text, note = '') {
  const li = document.createElement('li');
  li.className = `line ${who}`;
  const body = span('text', text);
  li.append(span('who', { student: 'You', examiner: 'Examiner' }[who] || 'Score'), body);
  if (note) li.append(span('note', note));
  const list = $('transcript');
  list.append(li);
  list.scrollTop = list.scrollHeight;
  return body;
}

function ms(value) { return `${Math.round(value)} ms`; }

// --- getting a session ----------------------------------------------------------------------

async function loadCatalog() {
  show('setup');
  let catalog = null;
  try {
    const res = await fetch('/v1/catalog');
    if (res.ok) catalog = await res.json();
  } catch (err) {
    console.warn('catalog unavailable', err);
  }
  if (!catalog || catalog.practice === false || !(catalog.college_types || []).length) {
    show('practice-off');
    setStatus('Ask your examiner for a session link.');
    return;
  }
  const college = $('college-type');
  const scenario = $('scenario');
  const fillScenarios = () => {
    const type = catalog.college_types.find((c) => c.id === college.value);
    scenario.replaceChildren(...(type ? type.scenarios : []).map((s) => new Option(s.name, s.id)));
  };
  college.replaceChildren(...catalog.college_types.map((c) => new Option(c.name || title(c.id), c.id)));
  college.addEventListener('change', fillScenarios);
  fillScenarios();
  show('practice-form');
  setStatus('Choose a practice viva, or open the link your examiner gave you.');
  $('practice-form').addEventListener('submit', startPractice);
}

function title(id) { return id.charAt(0).toUpperCase() + id.slice(1).replace(/_/g, ' '); }

async function startPractice(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = {
    name: String(form.get('name')).trim(),
    college_type: String(form.get('college_type')),
    scenario_id: String(form.get('scenario_id')),
  };
  $('practice-start').disabled = true;
  showAlert('');
  try {
    const res = await fetch('/v1/practice', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (res.status !== 201) {
      const err = data.error || { code: `http_${res.status}`, message: res.statusText };
      if (err.code === 'practice_disabled') { show('practice-form', false); show('practice-off'); }
      showAlert(`Could not start a practice viva (${err.code}): ${err.message}`);
      return;
    }
    // Put the session in the address bar: a reload reconnects to the same viva.
    const link = `/?code=${encodeURIComponent(data.session_code)}&token=${encodeURIComponent(data.token)}`;
    history.replaceState(null, '', link);
    show('setup', false);
    await start(data.session_code, data.token);
  } catch (err) {
    showAlert(`Could not start a practice viva: ${err.message}`);
  } finally {
    $('practice-start').disabled = false;
  }
}

// --- the live session -----------------------------------------------------------------------

class Session {
  constructor(code, token, audio) {
    Object.assign(this, { code, token, audio });
    this.ws = null;
    this.ready = false; // session.created seen on the current connection
    this.ended = false;
    this.final = false; // reconnecting cannot help
    this.lostAt = null; // when the connection dropped (for the grace period)
    this.outRate = 24000;
    this.lines = new Map(); // response_id -> caption element
    this.speaking = { examiner: false, student: false, thinking: false, playing: false };
    this.lastHeard = 0;
    this.pings = new Map();
    this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
  }

  connect() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${location.host}/v1/sessions/${encodeURIComponent(this.code)}` +
      `/stream?token=${encodeURIComponent(this.token)}`;
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (e) => this.onMessage(e.data);
    ws.onclose = (e) => { if (ws === this.ws) this.onClose(e.code, e.reason); };
    this.ws = ws;
    this.lastHeard = Date.now();
    debug.connects += 1;
  }

  // Nothing is sent before session.created: it says how turns are taken.
  get live() { return this.ready && this.ws && this.ws.readyState === WebSocket.OPEN; }

  send(event) { if (this.live) this.ws.send(JSON.stringify(event)); }

  sendAudio(buffer) {
    if (!this.live) return; // while disconnected the microphone's frames are dropped
    this.ws.send(buffer);
    debug.framesSent += 1;
  }

  ping() {
    if (!this.ready) return;
    if (Date.now() - this.lastHeard > SILENT_LINK_MS) {
      this.abandon('no reply from the server'); // a half-open link never fires `close`
      return;
    }
    const id = `p${Date.now()}`;
    this.pings.set(id, performance.now());
    this.send({ type: 'ping', event_id: id });
  }

  onMessage(data) {
    this.lastHeard = Date.now();
    if (typeof data !== 'string') {
      if (!this.ready) return;
      debug.bytesReceived += data.byteLength;
      this.audio.play(data, this.outRate);
      return;
    }
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return; // not ours to fail on: the server only sends JSON
    }
    debug.events.push(event.type);
    const handler = HANDLERS[event.type];
    if (handler) handler.call(this, event); // unknown events are ignored (protocol versioning)
    this.updateIndicator();
  }

  // Give up on the current socket as a network failure would (close code 1006). Its own close
  // event is ignored: the browser would report the code the server echoes back (1000).
  abandon(reason) {
    const dead = this.ws;
    if (!dead) return;
    this.ws = null;
    dead.close(4900, reason);
    this.onClose(1006, reason);
  }

  onClose(code, reason) {
    this.ready = false;
    if (this.ended) return; // the closing words may still be playing: let them finish
    this.audio.flush();
    this.lostAt = this.lostAt || Date.now();
    const waited = Date.now() - this.lostAt;
    if (this.final || FINAL_CLOSE.has(code) || waited > graceMs) {
      this.final = true;
      this.stop();
      setStatus(waited > graceMs
        ? 'Connection lost and could not be restored. Reload the page to try again.'
        : `Disconnected (${code}${reason ? `: ${reason}` : ''}).`, 'error');
    } else {
      // Back off 0.25 s, 0.5 s, ... 4 s between attempts, until the grace period is over.
      setStatus('Connection lost — reconnecting…', 'warn');
      const delay = Math.min(4000, 250 * 2 ** Math.floor(waited / 1000));
      setTimeout(() => { if (!this.ended && !this.final) this.connect(); }, delay);
    }
    this.updateIndicator();
  }

  stop() {
    clearInterval(this.pingTimer);
    this.audio.stopMic();
  }

  updateIndicator() {
    const s = this.speaking;
    let state = 'listening';
    let text = 'Listening';
    if (this.ended || this.final) [state, text] = ['idle', 'Session over'];
    else if (!this.ready) [state, text] = ['offline', 'Not connected'];
    else if (s.student) [state, text] = ['student', 'You are speaking'];
    else if (s.examiner || s.playing) [state, text] = ['examiner', 'Examiner speaking'];
    else if (s.thinking) [state, text] = ['thinking', 'Examiner is thinking…'];
    const el = $('indicator');
    if (el.dataset.state !== state) {
      el.dataset.state = state;
      $('indicator-text').textContent = text;
    }
  }
}

const HANDLERS = {
  'session.created'(e) {
    if (e.protocol_version !== PROTOCOL_VERSION) {
      this.final = true;
      showAlert(`This page speaks protocol ${PROTOCOL_VERSION}, the server ${e.protocol_version}.`);
      this.ws.close(1000);
      return;
    }
    this.ready = true;
    if (typeof e.reconnect_grace_seconds === 'number') graceMs = e.reconnect_grace_seconds * 1000;
    this.outRate = e.output_audio_format.sample_rate;
    const back = this.lostAt !== null || e.resumed;
    debug.resumed = Boolean(e.resumed);
    this.lostAt = null;
    setStatus(back ? 'Reconnected — the viva goes on.'
      : 'Connected — the examiner will start shortly.', 'ok');
    showAlert('');
    $('session-label').textContent = `Session ${e.session_code} · ${e.question_count} questions`;
    this.send({ type: 'session.update', client_info: { app: 'web', version: PROTOCOL_VERSION } });
  },
  'input_audio_buffer.speech_started'() { this.speaking.student = true; },
  'input_audio_buffer.speech_stopped'() { Object.assign(this.speaking, { student: false, thinking: true }); },
  'conversation.item.input_audio_transcription.completed'(e) {
    addLine('student', e.transcript || '(nothing heard)', `Q${e.question_number}`);
  },
  'response.created'(e) {
    Object.assign(this.speaking, { examiner: true, thinking: false });
    this.lines.set(e.response_id, addLine('examiner', ''));
  },
  'response.audio_transcript.delta'(e) {
    if (!this.lines.has(e.response_id)) this.lines.set(e.response_id, addLine('examiner', ''));
    this.lines.get(e.response_id).textContent += e.delta;
  },
  'response.done'(e) {
    this.speaking.examiner = false;
    if (e.latency_ms !== null && e.latency_ms !== undefined) {
      debug.latencies.push(e.latency_ms);
      const avg = debug.latencies.reduce((a, b) => a + b, 0) / debug.latencies.length;
      $('latency').textContent = ms(e.latency_ms);
      $('latency-avg').textContent = ms(avg);
      const stages = Object.entries(e.stages_ms || {}).filter(([, v]) => typeof v === 'number');
      const parts = stages.map(([k, v]) => `${k.replace(/_/g, ' ')} ${Math.round(v)}`);
      $('stages').textContent = parts.length ? `Stages (ms): ${parts.join(' · ')}` : '';
    }
  },
  'response.cancelled'(e) {
    this.audio.flush(); // barge-in: nothing queued of this response may still be heard
    this.speaking.examiner = false;
    const line = this.lines.get(e.response_id);
    if (line) line.textContent += ' …';
  },
  'exam.question'(e) {
    if ($('status').textContent.startsWith('Connected')) setStatus('The viva is under way.', 'ok');
    $('question-number').textContent = `Question ${e.number} of ${e.total}`;
    $('question').textContent = e.text;
  },
  'exam.evaluation'(e) {
    const note = `Q${e.question_number} ${e.feedback_type}`;
    addLine('score', `${e.score} / ${e.max_score} — ${e.feedback}`, note);
  },
  'exam.completed'(e) {
    $('result-grade').textContent = `Grade ${e.grade}`;
    $('result-score').textContent = `${e.total_score} / ${e.max_score}`;
    $('result-pct').textContent = `${e.percentage.toFixed(1)} %`;
    $('result-pass').textContent = e.passed ? 'Passed' : 'Not passed';
    $('result').dataset.passed = String(e.passed);
    if (e.status === 'terminated') $('result-title').textContent = 'Result (ended early)';
    show('result');
  },
  'session.ended'(e) {
    this.ended = true;
    this.stop();
    setStatus(END_MESSAGES[e.reason] || `The viva ended (${e.reason}).`, 'ok');
    $('repeat').disabled = $('end').disabled = true;
  },
  error(e) {
    showAlert(`Error ${e.code}: ${e.message}`);
    if (FINAL_ERRORS.has(e.code)) this.final = true;
  },
  pong(e) {
    const sent = this.pings.get(e.event_id);
    this.pings.delete(e.event_id);
    if (sent !== undefined) $('rtt').textContent = ms(performance.now() - sent);
  },
};

async function start(code, token) {
  show('ready', false);
  show('exam');
  setStatus('Asking for your microphone…');
  let audio;
  try {
    audio = await openAudio(
      (msg) => {
        if (session) session.sendAudio(msg.buffer);
        $('mic-level').style.width = `${Math.min(100, Math.round(msg.peak * 140))}%`;
      },
      (msg) => {
        debug.framesPlayed = msg.framesPlayed;
        debug.playing = msg.playing;
        if (session) {
          session.speaking.playing = msg.playing;
          session.updateIndicator();
        }
      },
    );
  } catch (err) {
    show('exam', false);
    setStatus('Microphone unavailable.', 'error');
    showAlert(MIC_MESSAGES[err.name] ||
      `The microphone could not be opened (${err.name}: ${err.message}).`);
    return;
  }
  setStatus('Connecting to the examiner…');
  session = new Session(code, token, audio);
  $('repeat').addEventListener('click', () => session.send({ type: 'exam.repeat' }));
  $('end').addEventListener('click', () => session.send({ type: 'session.end' }));
  session.connect();
}

function main() {
  const params = new URLSearchParams(location.search);
  const [code, token] = [params.get('code'), params.get('token')];
  if (code && token) {
    show('ready');
    setStatus(`Session ${code}: press Start when you are ready. The page will ask for your microphone.`);
    $('start').addEventListener('click', () => start(code, token), { once: true });
  } else {
    loadCatalog();
  }
}

main();
