// The documents carry the whole contract: every relative link in a Markdown
// file of the repository leads to a file (and heading) that exists, and
// nothing in the tree points at a document outside the repository.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = process.env.SA_SOURCE_DIR || path.resolve(here, '../..');
const SKIP = new Set(['node_modules', 'corpus', '.git']);

function walk(dir, out = []) {
	for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
		if (SKIP.has(d.name) || (dir === root && d.name.startsWith('build')) ||
		    (dir === root && d.name === 'var'))
			continue;
		const p = path.join(dir, d.name);
		if (d.isDirectory())
			walk(p, out);
		else if (d.isFile())
			out.push(p);
	}
	return out;
}

// GitHub's heading anchors: lower case, punctuation dropped, spaces to '-'.
const slug = (h) => h.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
const anchors = (file) => new Set(fs.readFileSync(file, 'utf8').split('\n')
	.filter((l) => /^#{1,6} /.test(l)).map((l) => slug(l.replace(/^#+ /, ''))));

const files = walk(root);
const markdown = files.filter((f) => f.endsWith('.md'));

test('every relative link in the Markdown documents resolves', () => {
	assert.ok(markdown.some((f) => f === path.join(root, 'README.md')));
	const broken = [];
	for (const file of markdown) {
		const text = fs.readFileSync(file, 'utf8').replace(/```[\s\S]*?```/g, '');
		for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
			const link = m[1];
			if (/^[a-z]+:/i.test(link))
				continue;
			const [target, anchor] = link.split('#');
			const dest = target ? path.resolve(path.dirname(file), target) : file;
			const where = `${path.relative(root, file)}: ${link}`;
			if (!dest.startsWith(root + path.sep) && dest !== root)
				broken.push(`${where} (outside the repository)`);
			else if (!fs.existsSync(dest))
				broken.push(`${where} (no such file)`);
			else if (anchor && dest.endsWith('.md') && !anchors(dest).has(anchor))
				broken.push(`${where} (no such heading)`);
		}
	}
	assert.deepEqual(broken, []);
});

test('nothing in the tree cites a contract document outside the repository', () => {
	// Built from pieces so that this file does not match itself.
	const outside = new RegExp(['SPEC ?\u00a7', 'SPEC\\.md', '\\.\\./' + 'shared'].join('|'));
	const dirs = ['src', 'include', 'tests', 'scripts', 'conf'].map((d) => path.join(root, d) + path.sep);
	const hits = files
		.filter((f) => f === path.join(root, 'README.md') || dirs.some((d) => f.startsWith(d)))
		.filter((f) => outside.test(fs.readFileSync(f, 'utf8')))
		.map((f) => path.relative(root, f));
	assert.deepEqual(hits, []);
});
