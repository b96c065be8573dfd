<!DOCTYPE html>
%# The admin status page. Every value goes through {{ }} (HTML-escaped), never the raw form.
%# when() comes from web.admin_routes, duration() and size() from daemon.status_report: plain text.
%def shown(rows, total):
%  if total is not None and total > len(rows):
<p class="note">Showing {{len(rows)}} of {{total}}.</p>
%  end
%end
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>envoy-proxy status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.6em 0 .4em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #f6f6f6; font-weight: 600; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
.ok { color: #17692b; font-weight: 600; }
.bad { color: #b00020; font-weight: 600; }
.muted, .note { color: #666; }
.error { color: #b00020; white-space: pre-wrap; word-break: break-word; }
code { font-size: .95em; }
.unhealthy { border: 2px solid #b00020; background: #fdecee; color: #b00020; padding: .4em 1em; margin: 1em 0; }
.unhealthy h2 { border: 0; margin: .3em 0; }
</style>
</head>
<body>
<h1>envoy-proxy status</h1>
<p class="muted">Version {{facts['version']}} · as of {{when(facts['now'])}} · times in each install's zone (daemon-wide times in {{facts['zone']}})</p>
% health = facts['health']
% if health is not None and not health['healthy']:
<section class="unhealthy" id="unhealthy">
<h2>UNHEALTHY: due work is not getting done</h2>
<ul>
%   for reason in health['reasons']:
<li><strong>{{reason['summary']}}</strong>
%     if reason['detail']:
<br><span class="error">{{reason['detail']}}</span>
%     end
</li>
%   end
</ul>
</section>
% end

<h2>Health</h2>
<dl class="facts">
<dt>Scheduler</dt>
<dd>
% alive = facts['scheduler']['alive']
% if alive is None:
<span class="muted">unknown (not running in this process)</span>
% elif alive:
<span class="ok">alive</span>
% else:
<span class="bad">NOT RUNNING — due work is not being done; restart the daemon</span>
% end
</dd>
% runs = health['runs'] if health is not None else None
% if runs is not None:
<dt>Last successful run</dt><dd>{{when(runs['last_success_at'])}}</dd>
<dt>Last failed run</dt><dd class="{{'bad' if runs['consecutive_failures'] else ''}}">{{when(runs['last_failure_at'])}}{{' (%d in a row)' % runs['consecutive_failures'] if runs['consecutive_failures'] else ''}}</dd>
% end
<dt>Alarm set for</dt><dd>{{when(facts['scheduler']['alarm_at'])}}</dd>
<dt>Next due work</dt><dd>{{when(facts['scheduler']['next_due'])}}</dd>
<dt>Started</dt><dd>{{when(facts['started_at'])}} (up {{duration(facts['uptime_seconds'])}})</dd>
<dt>Database</dt><dd><code>{{facts['database']['path']}}</code>, {{size(facts['database']['size_bytes'])}} (+ WAL {{size(facts['database']['wal_bytes'])}}), schema version {{facts['database']['schema_version']}}</dd>
<dt>Quarantined deliveries</dt><dd class="{{'bad' if facts['counts']['events_quarantined'] else ''}}">{{facts['counts']['events_quarantined']}}</dd>
<dt>Pending actions</dt><dd>{{facts['counts']['actions_pending']}}</dd>
<dt>Failing actions</dt><dd class="{{'bad' if facts['counts']['actions_failing'] else ''}}">{{facts['counts']['actions_failing']}} (≥ {{facts['actions']['flag_after_attempts']}} attempts)</dd>
<dt>Dead actions</dt><dd class="{{'bad' if facts['counts']['actions_dead'] else ''}}">{{facts['counts']['actions_dead']}}</dd>
<dt>Watchlist</dt><dd>{{facts['watchlist']['size']}} entries</dd>
% if facts['retention'] is not None:
<dt>Personal data</dt><dd>{{facts['retention']['summary']}}</dd>
% if facts['retention'].get('last_error'):
<dt>Retention pass</dt><dd class="bad">FAILING (last at {{when(facts['retention']['last_failure_at'])}}): {{facts['retention']['last_error']}}</dd>
% elif 'last_pass_at' in facts['retention']:
<dt>Last retention pass</dt><dd>{{when(facts['retention']['last_pass_at'])}}</dd>
% end
% end
</dl>

<h2>Instances ({{len(facts['instances'])}})</h2>
% if facts['instances']:
<table>
<thead><tr><th>Instance</th><th>Host</th><th>PID</th><th>Started</th><th>Last seen</th><th>Claims held</th><th>Periodic passes</th></tr></thead>
<tbody>
% for n in facts['instances']:
<tr>
<td><code>{{n['id']}}</code>{{' (this one)' if n['this'] else ''}}</td>
<td>{{n['host']}}</td>
<td>{{n['pid']}}</td>
<td>{{when(n['started_at'])}}</td>
<td class="{{'' if n['alive'] else 'bad'}}">{{when(n['last_seen_at'])}}{{'' if n['alive'] else ' (not alive: its claims are taken over)'}}</td>
<td>{{n['claims']}}</td>
<td>{{'runs them' if n['runs_passes'] else '—'}}</td>
</tr>
% end
</tbody>
</table>
% else:
<p class="muted">none: no daemon is running</p>
% end

<h2>Installs ({{facts['counts']['installs']}})</h2>
% shown(facts['installs'], facts['counts']['installs'])
% if facts['installs']:
<table>
<thead><tr><th>Install</th><th>Company</th><th>Location</th><th>Proxy site</th><th>Mapped flows</th><th>Last event</th><th>Identity purpose</th><th>Last error</th></tr></thead>
<tbody>
% for i in facts['installs']:
<tr>
<td><code>{{i['install_id']}}</code></td>
<td>{{i['company_name'] or i['company_id'] or '—'}}</td>
<td>{{i['location_name'] or i['location_id'] or '—'}}<br><span class="muted">{{i['timezone']}}</span></td>
<td>{{i['site_name'] or i['site_id'] or '—'}}</td>
<td>{{i['flows_count']}}<br><span class="muted">{{', '.join(i['flows'])}}</span></td>
<td>{{when(i['last_event_at'])}}</td>
<td>
%   if i['purpose_registered']:
registered {{when(i['purpose_registered_at'])}}
%   else:
<span class="muted">not registered</span>
%   end
</td>
<td class="error">{{i['last_error'] or ''}}</td>
</tr>
% end
</tbody>
</table>
% else:
<p class="muted">No install yet: install the plugin in Envoy.</p>
% end

%def grant_table(rows, with_activation=False):
<table>
<thead><tr><th>Grant</th><th>Name</th><th>Email</th><th>Subject</th><th>Starts</th><th>Ends</th>
%  if with_activation:
<th>Activates</th>
%  end
<th>Proxy person</th><th>Last error</th></tr></thead>
<tbody>
%  for g in rows:
<tr>
<td>{{g['id']}} <span class="muted">{{g['kind']}}</span></td>
<td>{{g['full_name'] or '—'}}</td>
<td>{{g['email'] or '—'}}</td>
<td><code>{{g['subject']}}</code></td>
<td>{{when(g['starts_at'])}}</td>
<td>{{when(g['ends_at'])}}</td>
%    if with_activation:
<td>{{when(g.get('activates_at'))}}</td>
%    end
<td><code>{{g['proxy_person_id'] or '—'}}</code></td>
<td class="error">{{g['last_error'] or ''}}</td>
</tr>
%  end
</tbody>
</table>
%end

<h2>Active grants ({{facts['counts']['grants_active']}})</h2>
% shown(facts['grants']['active'], facts['counts']['grants_active'])
% if facts['grants']['active']:
% grant_table(facts['grants']['active'])
% else:
<p class="muted">Nobody has access right now.</p>
% end

<h2>Upcoming activations ({{facts['counts']['grants_pending']}} pending)</h2>
% shown(facts['grants']['upcoming'], facts['counts']['grants_pending'])
% if facts['grants']['upcoming']:
% grant_table(facts['grants']['upcoming'], with_activation=True)
% else:
<p class="muted">Nothing scheduled.</p>
% end

%def action_table(rows):
<table>
<thead><tr><th>Action</th><th>Kind</th><th>Grant</th><th>Attempts</th><th>Due</th><th>Next attempt</th><th>Reason</th></tr></thead>
<tbody>
%  for a in rows:
<tr>
<td>{{a['id']}}</td>
<td>{{a['kind']}}</td>
<td>{{a['grant_id'] if a['grant_id'] is not None else '—'}} {{a['full_name'] or ''}}</td>
<td>{{a['attempts']}}</td>
<td>{{when(a['due_at'])}}</td>
<td>{{when(a['next_attempt_at'])}}</td>
<td class="error">{{a['reason'] or ''}}</td>
</tr>
%  end
</tbody>
</table>
%end

<h2>Failing actions ({{facts['counts']['actions_failing']}})</h2>
% shown(facts['actions']['failing'], facts['counts']['actions_failing'])
% if facts['actions']['failing']:
<p class="note">Still retried with backoff. Run them again now: <code>envoy-proxy retry --all-failed</code></p>
% action_table(facts['actions']['failing'])
% else:
<p class="muted">None.</p>
% end

<h2>Dead actions ({{facts['counts']['actions_dead']}})</h2>
% shown(facts['actions']['dead'], facts['counts']['actions_dead'])
% if facts['actions']['dead']:
<p class="note">Given up. After fixing the cause: <code>envoy-proxy retry ACTION_ID</code></p>
% action_table(facts['actions']['dead'])
% else:
<p class="muted">None.</p>
% end

<h2>Quarantined deliveries ({{facts['counts']['events_quarantined']}})</h2>
% shown(facts['quarantined'], facts['counts']['events_quarantined'])
% if facts['quarantined']:
<p class="note">Their planning failed; each is retried with backoff, apart from the rest, and its job is updated when it is planned.</p>
<table>
<thead><tr><th>Job</th><th>Event</th><th>Install</th><th>Received</th><th>Attempts</th><th>Next try</th><th>Error</th></tr></thead>
<tbody>
%  for q in facts['quarantined']:
<tr>
<td>{{q['job_id']}}</td>
<td>{{q['event']}}</td>
<td>{{q['install_id']}}</td>
<td>{{when(q['received_at'])}}</td>
<td>{{q['attempts']}}</td>
<td>{{when(q['next_attempt_at'])}}</td>
<td class="error">{{q['error'] or ''}}</td>
</tr>
%  end
</tbody>
</table>
% else:
<p class="muted">None.</p>
% end

<h2>Recent identity verifications</h2>
% if facts['verifications']:
<table>
<thead><tr><th>When</th><th>Install</th><th>Entry</th><th>Decision</th><th>Reason</th><th>Watchlist entry</th><th>Time taken</th></tr></thead>
<tbody>
% for v in facts['verifications']:
<tr>
<td>{{when(v['decided_at'])}}</td>
<td><code>{{v['install_id']}}</code></td>
<td><code>{{v['entry_id'] or '—'}}</code></td>
<td class="{{'bad' if v['decision'] != 'approved' else 'ok'}}">{{v['decision']}}</td>
<td>{{v['reason'] or ''}}</td>
<td>{{v['watchlist_entry_id'] if v['watchlist_entry_id'] is not None else '—'}}</td>
<td>{{v['duration_ms']}} ms{{' (deadline hit)' if v['deadline_hit'] else ''}}</td>
</tr>
% end
</tbody>
</table>
% else:
<p class="muted">None yet.</p>
% end

<p class="muted">The same facts as JSON: <a href="status.json">status.json</a> · a visitor's story: <a href="status/activity">Activity</a> · metrics: <a href="metrics">/metrics</a></p>
</body>
</html>
