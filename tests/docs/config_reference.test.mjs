// The configuration reference has one source per reader: the table in
// src/config.c for the daemon (printed by `stockalertd --config-keys`) and the
// comments of conf/stockalertd.json for people. This test holds them together:
// every key of the table is set and documented in the sample, every key the
// sample documents is in the table, and the documented default, bounds and
// choices are the table's. The keys of an array's elements ("auth.keys[].kid")
// are documented next to the array ("//keys[].kid") and set only in examples. The format it reads is described in conf/README.md
// ("Configuration reference").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const sourceDir = process.env.SA_SOURCE_DIR || path.resolve(here, '../..');
const samplePath = path.join(sourceDir, 'conf/stockalertd.json');
const daemon = process.env.STOCKALERTD || path.join(sourceDir, 'build/stockalertd');

// A JSON value at the start of s: a string, an array of strings, a number,
// null, true or false (what a default can be).
const JSON_VALUE = /^(?:"(?:[^"\\]|\\.)*"|\[(?:[^\]"]|"(?:[^"\\]|\\.)*")*\]|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|null|true|false)/;
const RANGE = /(-?\d+(?:\.\d+)?)\.\.(-?\d+(?:\.\d+)?)/g;
const AT_MOST = /\bat most (\d+)\b/g;

// The sample, flattened: dotted key -> value, dotted key -> comment, and the
// sections (objects that are not keys themselves).
function flatten(sample, tableKeys) {
	const values = new Map(), comments = new Map(), sections = new Set();
	const walk = (obj, prefix) => {
		for (const [name, v] of Object.entries(obj)) {
			if (name === '//')
				continue; // a comment on the whole object
			if (name.startsWith('//')) {
				comments.set(prefix + name.slice(2), v);
				continue;
			}
			const key = prefix + name;
			if (!tableKeys.has(key) && v && typeof v === 'object' && !Array.isArray(v)) {
				sections.add(key);
				walk(v, key + '.');
			} else {
				values.set(key, v);
			}
		}
	};
	walk(sample, '');
	return { values, comments, sections };
}

// Everything wrong with the sample against the table, one line each.
export function problems(table, sample) {
	const out = [];
	const byKey = new Map(table.map((e) => [e.key, e]));
	const { values, comments, sections } = flatten(sample, new Set(byKey.keys()));
	// "auth.keys[].kid" -> "auth.keys"; null for a plain key.
	const parentOf = (key) => (key.includes('[].') ? key.slice(0, key.indexOf('[].')) : null);
	const leaf = (key) => {
		const base = parentOf(key) ?? key;
		return key.slice(base.lastIndexOf('.') + 1);
	};

	for (const e of table) {
		const parent = parentOf(e.key);
		if (parent !== null && byKey.get(parent)?.type !== 'array')
			out.push(`${e.key}: an element key of ${parent}, which is not an array key of the table`);
		if (parent === null && !values.has(e.key))
			out.push(`${e.key}: in src/config.c's table but not set in conf/stockalertd.json`);
		if (parent !== null && values.has(e.key))
			out.push(`${e.key}: an element key, set in conf/stockalertd.json outside an element`);
		if (!comments.has(e.key))
			out.push(`${e.key}: in src/config.c's table but conf/stockalertd.json has no "//${leaf(e.key)}" comment for it`);
	}
	for (const [key, v] of values) {
		if (!byKey.has(key)) {
			out.push(`${key}: set in conf/stockalertd.json but not a key of src/config.c's table`);
			continue;
		}
		// Elements of an array of objects hold only its element keys.
		for (const [i, elem] of (Array.isArray(v) ? v : []).entries()) {
			if (!elem || typeof elem !== 'object' || Array.isArray(elem))
				continue;
			for (const name of Object.keys(elem))
				if (!name.startsWith('//') && !byKey.has(`${key}[].${name}`))
					out.push(`${key}[${i}].${name}: set in conf/stockalertd.json but not a key of src/config.c's table`);
		}
	}
	for (const [key, text] of comments) {
		const e = byKey.get(key);
		if (!e) {
			if (!sections.has(key))
				out.push(`${key}: documented in conf/stockalertd.json but not a key of src/config.c's table`);
			continue;
		}
		if (typeof text !== 'string') {
			out.push(`${key}: its comment must be a string`);
			continue;
		}
		const at = text.lastIndexOf('Default ');
		const m = at < 0 ? null : JSON_VALUE.exec(text.slice(at + 8));
		if (!m) {
			out.push(`${key}: the comment must end with "Default <JSON value>" (the table says ${JSON.stringify(e.default)})`);
		} else {
			let doc;
			try {
				doc = JSON.parse(m[0]);
			} catch {
				doc = Symbol('unparsable');
			}
			try {
				assert.deepStrictEqual(doc, e.default);
			} catch {
				out.push(`${key}: documented default ${m[0]}, the table's is ${JSON.stringify(e.default)}`);
			}
		}
		const ranges = [...text.matchAll(RANGE)].map((r) => [Number(r[1]), Number(r[2])]);
		if ((e.type === 'integer' || e.type === 'number') && ranges.length === 0)
			out.push(`${key}: the comment must give the bounds as ${e.min}..${e.max}`);
		for (const [lo, hi] of ranges)
			if (lo !== e.min || hi !== e.max)
				out.push(`${key}: documented bounds ${lo}..${hi}, the table's are ${e.min}..${e.max}`);
		if (e.type === 'array') {
			const most = [...text.matchAll(AT_MOST)].map((r) => Number(r[1]));
			if (!most.includes(e.max))
				out.push(`${key}: the comment must say "at most ${e.max}" (entries)`);
		}
		if (e.type === 'enum' && !text.includes(e.choices.join(' | ')))
			out.push(`${key}: the comment must list the choices as "${e.choices.join(' | ')}"`);
	}
	return out;
}

const table = JSON.parse(execFileSync(daemon, ['--config-keys'], { encoding: 'utf8' }));
const sample = JSON.parse(fs.readFileSync(samplePath, 'utf8'));

test('stockalertd --config-keys prints the table: key, type, default, bounds or choices', () => {
	assert.ok(table.length > 30, `only ${table.length} keys`);
	const port = table.find((e) => e.key === 'listen.port');
	assert.deepEqual(port, { key: 'listen.port', type: 'integer', default: 8080, min: 0, max: 65535 });
	const alg = table.find((e) => e.key === 'auth.algorithm');
	assert.deepEqual(alg.choices, ['HS256', 'RS256', 'ES256']);
	assert.equal(alg.default, 'HS256');
	for (const e of table)
		assert.ok('default' in e && typeof e.type === 'string', JSON.stringify(e));
});

test('conf/stockalertd.json documents exactly the keys of the table, with their defaults and bounds', () => {
	assert.deepEqual(problems(table, sample), []);
});

test('the check notices an undocumented key, a stray one, and a wrong default, bound or choice', () => {
	const copy = () => structuredClone(sample);
	const find = (list, re) => list.some((p) => re.test(p));

	// A key added to the table and not to the sample.
	const more = [...table, { key: 'ws.new_knob', type: 'integer', default: 1, min: 0, max: 9 }];
	let p = problems(more, sample);
	assert.ok(find(p, /^ws\.new_knob: .* not set/), p.join('\n'));
	assert.ok(find(p, /^ws\.new_knob: .* no "\/\/new_knob" comment/), p.join('\n'));

	// A key set and documented in the sample that the table does not know.
	let s = copy();
	s.ws.gone = 1;
	s.ws['//gone'] = 'Gone, 0..9. Default 1.';
	p = problems(table, s);
	assert.ok(find(p, /^ws\.gone: set in .* not a key/), p.join('\n'));
	assert.ok(find(p, /^ws\.gone: documented in .* not a key/), p.join('\n'));

	// Wrong default, wrong bounds, bounds missing, wrong choices, no default.
	s = copy();
	s.ws['//ping_interval_s'] = s.ws['//ping_interval_s'].replace('Default 25', 'Default 26');
	s.ws['//idle_timeout_s'] = s.ws['//idle_timeout_s'].replace('1..86400', '1..3600');
	s.redis['//db'] = 'Database number. Default 0.';
	s.log['//level'] = 'error | warn | info. Default "info".';
	s.listen['//host'] = 'Address to bind.';
	p = problems(table, s);
	assert.ok(find(p, /^ws\.ping_interval_s: documented default 26/), p.join('\n'));
	assert.ok(find(p, /^ws\.idle_timeout_s: documented bounds 1\.\.3600/), p.join('\n'));
	assert.ok(find(p, /^redis\.db: the comment must give the bounds as 0\.\.15/), p.join('\n'));
	assert.ok(find(p, /^log\.level: the comment must list the choices/), p.join('\n'));
	assert.ok(find(p, /^listen\.host: the comment must end with "Default/), p.join('\n'));
	assert.equal(p.length, 5, p.join('\n'));
});

test('the check holds the keys of an array\'s elements to the same rules', () => {
	const find = (list, re) => list.some((p) => re.test(p));
	const kid = table.find((e) => e.key === 'auth.keys[].kid');
	assert.ok(kid, 'auth.keys[].kid in --config-keys');
	assert.equal(table.find((e) => e.key === 'auth.keys').type, 'array');

	// An element key without its comment, a stray one, a wrong default.
	let s = structuredClone(sample);
	delete s.auth['//keys[].kid'];
	s.auth['//keys[].gone'] = 'Gone. Default null.';
	s.auth['//keys[].algorithm'] = s.auth['//keys[].algorithm'].replace('Default "HS256"', 'Default "RS256"');
	let p = problems(table, s);
	assert.ok(find(p, /^auth\.keys\[\]\.kid: .* no "\/\/keys\[\]\.kid" comment/), p.join('\n'));
	assert.ok(find(p, /^auth\.keys\[\]\.gone: documented in .* not a key/), p.join('\n'));
	assert.ok(find(p, /^auth\.keys\[\]\.algorithm: documented default "RS256"/), p.join('\n'));
	assert.equal(p.length, 3, p.join('\n'));

	// An example element with a key the table does not know; an element key
	// whose array is not in the table.
	s = structuredClone(sample);
	s.auth.keys = [{ kid: 'a', bogus: 1 }];
	p = problems([...table, { ...kid, key: 'auth.nokeys[].kid' }], s);
	assert.ok(find(p, /^auth\.keys\[0\]\.bogus: set in .* not a key/), p.join('\n'));
	assert.ok(find(p, /^auth\.nokeys\[\]\.kid: an element key of auth\.nokeys/), p.join('\n'));
});
