import { describe, expect, it } from 'vitest';
import {
  OCISNAP_USERDATA,
  SnapshotMetadataError,
  deploymentSnapshotInfo,
  isImportant,
  parseInfoXml,
  renderInfoXml,
  type SnapshotInfo,
} from '../../src/deploy/snapper.js';

// Written by Debian's snapper 0.10.4 (`snapper --no-dbus create ...`), byte for byte.
const snapperSingle = `<?xml version="1.0"?>
<snapshot>
  <type>single</type>
  <num>1</num>
  <date>2026-11-21 23:30:56</date>
  <description>hello &lt;&amp;&gt; "q" &#xE4;</description>
  <cleanup>number</cleanup>
  <userdata>
    <key>a</key>
    <value>1</value>
  </userdata>
  <userdata>
    <key>b</key>
    <value>x y</value>
  </userdata>
</snapshot>
`;
const snapperPre = `<?xml version="1.0"?>
<snapshot>
  <type>pre</type>
  <num>2</num>
  <date>2026-11-21 23:31:02</date>
  <description>before</description>
</snapshot>
`;
const snapperPost = `<?xml version="1.0"?>
<snapshot>
  <type>post</type>
  <num>3</num>
  <date>2026-11-21 23:31:02</date>
  <pre_num>2</pre_num>
  <description>after</description>
  <userdata>
    <key>important</key>
    <value>yes</value>
  </userdata>
</snapshot>
`;
const snapperEscapes = `<?xml version="1.0"?>
<snapshot>
  <type>single</type>
  <num>6</num>
  <date>2026-11-21 23:31:15</date>
  <description>cr&#xD;x &#x1F600; ' &#xE9;</description>
</snapshot>
`;

describe('parseInfoXml on snapper-made files', () => {
  it('reads a single snapshot with escapes, cleanup and userdata', () => {
    const info = parseInfoXml(snapperSingle, '/s/1/info.xml');
    expect(info).toEqual({
      num: 1,
      type: 'single',
      date: new Date(Date.UTC(2026, 10, 21, 23, 30, 56)),
      description: 'hello <&> "q" ä',
      cleanup: 'number',
      userdata: { a: '1', b: 'x y' },
    });
  });

  it('reads pre/post pairs and important userdata', () => {
    expect(parseInfoXml(snapperPre, 'pre')).toMatchObject({ num: 2, type: 'pre', description: 'before' });
    expect(parseInfoXml(snapperPre, 'pre').preNum).toBeUndefined();
    const post = parseInfoXml(snapperPost, 'post');
    expect(post).toMatchObject({ num: 3, type: 'post', preNum: 2 });
    expect(isImportant(post)).toBe(true);
    expect(isImportant(parseInfoXml(snapperPre, 'pre'))).toBe(false);
  });

  it('decodes character references, including astral ones and CR', () => {
    expect(parseInfoXml(snapperEscapes, 'x').description).toBe("cr\rx 😀 ' é");
  });

  it('re-renders every snapper sample byte for byte', () => {
    for (const xml of [snapperSingle, snapperPre, snapperPost, snapperEscapes]) {
      expect(renderInfoXml(parseInfoXml(xml, 'sample'))).toBe(xml);
    }
  });
});

describe('renderInfoXml', () => {
  const base: SnapshotInfo = {
    num: 42,
    type: 'single',
    date: new Date(Date.UTC(2025, 0, 2, 3, 4, 5, 678)),
    userdata: {},
  };

  it('writes the elements in snapper order, dropping milliseconds, UTC', () => {
    const xml = renderInfoXml({
      ...base,
      type: 'post',
      preNum: 41,
      uid: 1000,
      description: 'ocisnap: registry.example/os:1',
      cleanup: 'number',
      userdata: { 'ocisnap.image': 'registry.example/os:1', 'ocisnap.digest': 'sha256:ab' },
    });
    expect(xml).toBe(`<?xml version="1.0"?>
<snapshot>
  <type>post</type>
  <num>42</num>
  <date>2025-01-02 03:04:05</date>
  <uid>1000</uid>
  <pre_num>41</pre_num>
  <description>ocisnap: registry.example/os:1</description>
  <cleanup>number</cleanup>
  <userdata>
    <key>ocisnap.digest</key>
    <value>sha256:ab</value>
  </userdata>
  <userdata>
    <key>ocisnap.image</key>
    <value>registry.example/os:1</value>
  </userdata>
</snapshot>
`);
  });

  it('omits uid 0, empty description and cleanup, like snapper', () => {
    const xml = renderInfoXml({ ...base, uid: 0, description: '', cleanup: '' });
    expect(xml).not.toMatch(/uid|description|cleanup|userdata|pre_num/);
  });

  it('round-trips awkward text', () => {
    const description = 'a&b <c> "d" \'e\' tab\there\nnewline\r\ncrlf ümlaut 😀 ]]> &amp;';
    const info: SnapshotInfo = { ...base, date: new Date(Date.UTC(2025, 0, 2, 3, 4, 5)), description, userdata: { k: 'v<&>ü' } };
    const xml = renderInfoXml(info);
    expect(xml).toContain('&amp;amp;');
    expect(xml).toContain('&#xFC;');
    expect(xml).toContain('&#x1F600;');
    expect(xml).not.toMatch(/[^\x00-\x7f]/);
    expect(parseInfoXml(xml, 'rt')).toEqual(info);
  });

  it('refuses values snapper could not store or XML cannot hold', () => {
    const bad: Partial<SnapshotInfo>[] = [
      { num: 0 },
      { num: 1.5 },
      { num: 2 ** 32 },
      { date: new Date(NaN) },
      { type: 'post' },
      { type: 'pre', preNum: 3 },
      { uid: -1 },
      { description: 'bell\u0007' },
      { description: 'lone \ud800 surrogate' },
      { userdata: { 'a,b': 'x' } },
      { userdata: { 'a=b': 'x' } },
      { userdata: { '': 'x' } },
      { userdata: { k: 'x=y' } },
      { userdata: { k: 'x,y' } },
      { userdata: { k: '' } },
    ];
    for (const change of bad) {
      expect(() => renderInfoXml({ ...base, ...change }), JSON.stringify(change)).toThrow(SnapshotMetadataError);
    }
  });
});

describe('parseInfoXml strictness', () => {
  const wrap = (inner: string) => `<?xml version="1.0"?>\n<snapshot>${inner}</snapshot>\n`;
  const ok = '<type>single</type><num>7</num><date>2024-02-29 12:00:00</date>';

  it('accepts compact, commented, CDATA and self-closing forms', () => {
    const info = parseInfoXml(
      `\uFEFF<!-- hand made --><snapshot a="1"><type>single</type><num>7</num><date>2024-02-29 12:00:00</date>` +
        `<description><![CDATA[x<y]]> &#60;z</description><userdata><key>k</key><value/></userdata>` +
        `<userdata><key></key><value>dropped</value></userdata><future>ignored</future></snapshot>`,
      'f',
    );
    expect(info).toEqual({
      num: 7,
      type: 'single',
      date: new Date(Date.UTC(2024, 1, 29, 12)),
      description: 'x<y <z',
      userdata: { k: '' },
    });
  });

  it('rejects broken documents with the file named in the message', () => {
    const cases: [string, RegExp][] = [
      ['', /no root element/],
      ['<snapshot>', /not closed/],
      [wrap(ok + '<num>8</num>'), /<num> appears twice/],
      [wrap('<num>7</num><date>2024-02-29 12:00:00</date>'), /<type> missing/],
      [wrap('<type>single</type><date>2024-02-29 12:00:00</date>'), /<num> missing/],
      [wrap('<type>single</type><num>7</num>'), /<date> missing/],
      [wrap('<type>weekly</type><num>7</num><date>2024-02-29 12:00:00</date>'), /invalid <type>/],
      [wrap('<type>single</type><num>0</num><date>2024-02-29 12:00:00</date>'), /invalid <num>/],
      [wrap('<type>single</type><num>07</num><date>2024-02-29 12:00:00</date>'), /invalid <num>/],
      [wrap('<type>single</type><num>4294967296</num><date>2024-02-29 12:00:00</date>'), /invalid <num>/],
      [wrap('<type>single</type><num>7</num><date>2023-02-29 12:00:00</date>'), /invalid <date>/],
      [wrap('<type>single</type><num>7</num><date>2024-02-29T12:00:00Z</date>'), /invalid <date>/],
      [wrap(ok + '<description>&nbsp;</description>'), /unknown entity/],
      [wrap(ok + '<description>&#0;</description>'), /not an XML character/],
      [wrap(ok + '<description><b>x</b></description>'), /must hold text/],
      [wrap(ok + 'stray'), /unexpected text/],
      [wrap(ok) + '<again/>', /after the root element/],
      ['<!DOCTYPE x [<!ENTITY e "boom">]><snapshot/>', /DOCTYPE/],
      ['<info><num>1</num></info>', /root element is <info>/],
      [wrap(ok + '<description>x</descr>'), /closed by/],
    ];
    for (const [xml, message] of cases) {
      let caught: unknown;
      try {
        parseInfoXml(xml, '/x/.snapshots/7/info.xml');
      } catch (err) {
        caught = err;
      }
      expect(caught, xml).toBeInstanceOf(SnapshotMetadataError);
      const msg = (caught as Error).message;
      expect(msg, xml).toMatch(message);
      expect(msg.startsWith('/x/.snapshots/7/info.xml: '), msg).toBe(true);
      expect(msg).not.toContain('\n');
    }
  });
});

describe('deploymentSnapshotInfo', () => {
  it('describes a deployment by its image and records reference and digest', () => {
    const digest = `sha256:${'e'.repeat(64)}`;
    const info = deploymentSnapshotInfo({
      num: 12,
      image: 'localhost:5000/os@sha256:' + 'f'.repeat(64),
      manifestDigest: digest,
      date: new Date(Date.UTC(2026, 0, 1)),
      userdata: { [OCISNAP_USERDATA.health]: 'pending' },
    });
    expect(info).toMatchObject({ num: 12, type: 'single', cleanup: 'number', description: expect.stringContaining('localhost:5000/os@sha256:') });
    expect(info.userdata).toEqual({ 'ocisnap.image': 'localhost:5000/os@sha256:' + 'f'.repeat(64), 'ocisnap.digest': digest, 'ocisnap.health': 'pending' });
    expect(parseInfoXml(renderInfoXml(info), 'x')).toEqual(info);
  });
});
