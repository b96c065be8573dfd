<!DOCTYPE html>
%# The Activity view: one person's story from the audit trail. Every value goes through {{ }}
%# (HTML-escaped), never the raw form; details are shown as JSON text.
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>envoy-proxy activity</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.6em 0 .4em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25em .6em; border-bottom: 1px solid #eee; vertical-align: top; }
th { background: #f6f6f6; font-weight: 600; }
.muted { color: #666; }
.bad { color: #b00020; font-weight: 600; }
.details { font-family: monospace; font-size: .9em; color: #444; word-break: break-word; }
input[type=search] { width: 24em; padding: .2em; }
</style>
</head>
<body>
<h1>Activity</h1>
<p class="muted">What happened to a visitor: their events, the decisions and why, the calls to Proxy, and how their access stands now. <a href="../status">Back to the status page</a></p>
<form method="get" action="activity" role="search">
<label for="q">Email or name</label>
<input type="search" id="q" name="q" value="{{activity['query']}}" autofocus>
<button type="submit">Search</button>
</form>
% if activity['query']:
<h2>Access now ({{len(activity['grants'])}})</h2>
%   if activity['grants']:
<table id="grants">
<thead><tr><th>Grant</th><th>Name</th><th>Email</th><th>State</th><th>From</th><th>Until</th><th>Install</th><th>Error</th></tr></thead>
<tbody>
%     for g in activity['grants']:
<tr>
<td>{{g['grant_id']}}</td>
<td>{{g['full_name'] or '—'}}</td>
<td>{{g['email'] or '—'}}</td>
<td>{{g['state']}}</td>
<td>{{g['starts_local']}}</td>
<td>{{g['ends_local']}}</td>
<td><code>{{g['install_id']}}</code></td>
<td class="bad">{{g['last_error'] or ''}}</td>
</tr>
%     end
</tbody>
</table>
%   else:
<p class="muted">No grant: this person was never given access (the story below says why).</p>
%   end
<h2>Story ({{len(activity['entries'])}} entries, oldest first)</h2>
%   if activity['entries']:
<table id="story">
<thead><tr><th>When</th><th>What</th><th>Why / result</th><th>By</th><th>Name</th><th>Grant</th><th>Details</th></tr></thead>
<tbody>
%     for e in activity['entries']:
<tr>
<td>{{e['at_local']}}</td>
<td>{{e['kind']}}</td>
<td>{{e['reason'] or ''}}</td>
<td>{{e['actor']}}</td>
<td>{{e['full_name'] or '—'}}</td>
<td>{{e['grant_id'] if e['grant_id'] is not None else '—'}}</td>
<td class="details">{{details(e['details'])}}</td>
</tr>
%     end
</tbody>
</table>
%   else:
<p class="muted">Nothing recorded for “{{activity['query']}}”.</p>
%   end
% end
<p class="muted">The same as JSON: <a href="activity.json?q={{quote(activity['query'])}}">activity.json</a></p>
</body>
</html>
