/**
 * Where health verdicts go: the journal. A service's stdout is connected to
 * the journal by systemd, which reads a leading `<N>` on each line as the
 * syslog priority (sd-daemon(3): SD_ERR "<3>", SD_WARNING "<4>", SD_NOTICE
 * "<5>", SD_INFO "<6>"), so no journal library is needed. systemd sets
 * $JOURNAL_STREAM for a service whose stdout/stderr go to the journal
 * (systemd.exec(5)); by hand on a terminal the prefixes are left out.
 */

export type Priority = 'err' | 'warning' | 'notice' | 'info';

const prefixes: Record<Priority, string> = { err: '<3>', warning: '<4>', notice: '<5>', info: '<6>' };

export interface HealthLog {
  (priority: Priority, line: string): void;
}

export interface HealthLogOptions {
  /** Write `<N>` prefixes (default: when $JOURNAL_STREAM is set). */
  prefixes?: boolean;
  write?: (text: string) => void;
}

export function createHealthLog(opts: HealthLogOptions = {}): HealthLog {
  const withPrefix = opts.prefixes ?? (process.env['JOURNAL_STREAM'] ?? '') !== '';
  const write = opts.write ?? ((text: string) => void process.stdout.write(text));
  return (priority, line) => {
    // One journal entry per line: a multi-line message would lose its priority after the first.
    for (const part of line.split('\n')) write(`${withPrefix ? prefixes[priority] : ''}ocisnap-health: ${part}\n`);
  };
}
