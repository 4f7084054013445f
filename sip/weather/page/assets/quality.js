// The loss weather map: fetches /api/quality (or its public twin) and draws
// heat maps of networks by hour, trend lines and tables with ECharts.
// Plain script, no build step; every text from the server is set as text,
// never as markup (Call-IDs come from phones).
(function () {
  'use strict';

  var body = document.body;
  var cfg = {
    api: body.dataset.api,
    worst: body.dataset.worst || '',
    isPublic: body.dataset.public === 'true',
    minCalls: parseInt(body.dataset.minCalls, 10) || 30,
    tagKeys: parseList(body.dataset.tagKeys)
  };

  function parseList(s) {
    try {
      var v = JSON.parse(s || '[]');
      return Array.isArray(v) ? v : [];
    } catch (e) {
      return [];
    }
  }

  // Korean texts; the English ones are the page's own (read from the DOM
  // at start), plus those only this script writes.
  var T = {
    en: {
      'hop.uplink.short': 'Uplink',
      'hop.downlink.short': 'Downlink',
      'loading': 'Loading…',
      'error': 'Could not load the figures: ',
      'nodata': 'No calls with media in this period.',
      'few': 'too few calls',
      'calls': 'calls',
      'ci': '95 % CI',
      'over1': 'over 1 % loss',
      'over5': 'over 5 % loss',
      'loss': 'packets lost',
      'p50': 'median loss',
      'p90': 'p90 loss',
      'mos': 'mean MOS',
      'jitter': 'mean jitter',
      'nomos': 'no MOS (downlink)',
      'heat.note.public': 'Each cell is one network in one hour; hours with too few calls to compare are left blank. Hover a cell for its calls and 95 % interval. Times are local.',
      'public.note': 'Only figures from at least {n} call sides are shown.',
      'trend.note': 'Hours with fewer than {n} call sides are left out of the lines.',
      'side.caller': 'caller',
      'side.callee': 'callee',
      'notags': 'No tags are configured (users[].tags).',
      'none': '–'
    },
    ko: {
      'title': '통화 품질',
      'range': '기간',
      'range.24h': '최근 24시간',
      'range.48h': '최근 48시간',
      'range.7d': '최근 7일',
      'range.30d': '최근 30일',
      'range.90d': '최근 90일',
      'metric': '색상 기준',
      'metric.over1': '손실 1 % 초과 통화 비율',
      'metric.p90': '손실률 90번째 백분위수',
      'metric.mos': '평균 MOS',
      'metric.over5': '손실 5 % 초과 통화 비율',
      'metric.loss': '패킷 손실률',
      'split': '나누기',
      'split.hop': '구간',
      'split.access': '접속 방식',
      'split.tag': '태그',
      'tagkey': '태그',
      'heat.title': '시간대별 통신망',
      'heat.note': '칸 하나는 한 시간 동안의 한 통신망입니다. 회색 칸은 비교하기에 통화 수가 적은 칸이며 통화 수를 표시합니다. 칸 위에 마우스를 올리면 통화 수와 95 % 신뢰구간이 보입니다. 시각은 현지 시각입니다.',
      'trend.title': '통신망별 추이',
      'trend.hop': '구간',
      'hop.uplink': '상향 (단말 → 앵커)',
      'hop.downlink': '하향 (앵커 → 단말)',
      'hop.uplink.short': '상향',
      'hop.downlink.short': '하향',
      'table.title': '통신망·구간별',
      'col.network': '통신망',
      'col.hop': '구간',
      'col.calls': '통화 수',
      'col.loss': '패킷 손실률',
      'col.over1': '1 % 초과 (95 % 신뢰구간)',
      'col.over5': '5 % 초과 (95 % 신뢰구간)',
      'col.p50': '손실률 중앙값',
      'col.p90': '손실률 p90',
      'col.mos': '평균 MOS (95 % 신뢰구간)',
      'col.jitter': '평균 지터',
      'col.callid': 'Call-ID',
      'col.side': '쪽',
      'col.access': '접속',
      'col.losspct': '손실률',
      'col.mos1': 'MOS',
      'col.end': '종료',
      'worst.title': '최근 품질이 가장 나쁜 통화',
      'worst.note': '이 노드에서 최근 24시간 동안 손실이 가장 많았던 통화 쪽입니다.',
      'method.title': '측정 방법',
      'method.uplink.t': '상향 손실',
      'method.uplink': '미디어 앵커에서 각 단말이 보낸 RTP 패킷의 시퀀스 번호로 측정합니다: 예상 패킷 수와 앵커에 닿기 전에 잃은 패킷 수.',
      'method.downlink.t': '하향 손실',
      'method.downlink': '단말이 보낸 RTCP 수신 보고(fraction lost)에서 앵커에 닿기 전에 이미 잃은 몫을 뺀 값입니다. 하향 패킷 수는 앵커가 그 단말에 전달한 패킷 수로 추정합니다. RTCP를 보내지 않는 단말은 하향 수치가 없습니다.',
      'method.calls.t': '통화 수',
      'method.calls': '통화의 각 단말을 한 번씩 셉니다: 두 단말 사이의 통화는 통화 쪽 둘이며, 각각 자기 통신망·접속 방식·구간에 들어갑니다.',
      'method.share.t': '1 %·5 % 초과 통화',
      'method.share': '손실이 기준을 넘은 통화 쪽의 비율이며, 윌슨 점수 95 % 신뢰구간을 함께 보입니다. 표본이 작거나 비율이 0에 가까워도 의미가 있는 구간입니다.',
      'method.pct.t': '중앙값과 90번째 백분위수',
      'method.pct': '통화별 손실률을 고정 구간(0, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100 %) 히스토그램에 모아 읽습니다. 그래서 시간과 서버를 넘어 합칠 수 있고, 구간 폭만큼 정확합니다.',
      'method.mos.t': '평균 MOS',
      'method.mos': '앵커가 계산한 각 상향의 E-모델 점수입니다. 95 % 신뢰구간은 정규 근사(평균 ± 1.96 표준오차)입니다. 하향에는 MOS가 없습니다.',
      'method.min.t': '통화 수 부족',
      'method.min': '통화 쪽이 이 수보다 적은 수치는 회색으로 보이며 공개 페이지에서는 빠집니다:',
      'method.hours.t': '시간대',
      'method.hours': '통화는 응답된 시각(UTC)의 시간대에 셉니다.',
      'loading': '불러오는 중…',
      'error': '수치를 불러오지 못했습니다: ',
      'nodata': '이 기간에 미디어가 있는 통화가 없습니다.',
      'few': '통화 수 부족',
      'calls': '통화',
      'ci': '95 % 신뢰구간',
      'over1': '손실 1 % 초과',
      'over5': '손실 5 % 초과',
      'loss': '패킷 손실률',
      'p50': '손실률 중앙값',
      'p90': '손실률 p90',
      'mos': '평균 MOS',
      'jitter': '평균 지터',
      'nomos': 'MOS 없음 (하향)',
      'heat.note.public': '칸 하나는 한 시간 동안의 한 통신망입니다. 비교하기에 통화 수가 적은 시간대는 비워 둡니다. 칸 위에 마우스를 올리면 통화 수와 95 % 신뢰구간이 보입니다. 시각은 현지 시각입니다.',
      'public.note': '통화 쪽이 {n}개 이상인 수치만 보입니다.',
      'trend.note': '통화 쪽이 {n}개보다 적은 시간대는 선에서 뺍니다.',
      'side.caller': '발신',
      'side.callee': '수신',
      'notags': '설정된 태그가 없습니다 (users[].tags).',
      'none': '–'
    }
  };
  document.querySelectorAll('[data-i18n]').forEach(function (el) {
    var k = el.dataset.i18n;
    if (!(k in T.en)) {
      T.en[k] = el.textContent.trim().replace(/\s+/g, ' ');
    }
  });

  function pickLang() {
    var stored = null;
    try {
      stored = window.localStorage.getItem('sori.quality.lang');
    } catch (e) { /* storage may be off */ }
    if (stored === 'ko' || stored === 'en') {
      return stored;
    }
    if (body.dataset.lang === 'ko' || body.dataset.lang === 'en') {
      return body.dataset.lang; // from the request's Accept-Language
    }
    var nav = (navigator.languages && navigator.languages[0]) || navigator.language || '';
    return nav.toLowerCase().indexOf('ko') === 0 ? 'ko' : 'en';
  }

  var lang = pickLang();

  function t(key, n) {
    var s = (T[lang] && T[lang][key]) || T.en[key] || key;
    return n === undefined ? s : s.replace('{n}', String(n));
  }

  function applyLang() {
    document.documentElement.lang = lang;
    document.querySelectorAll('[data-i18n]').forEach(function (el) {
      el.textContent = t(el.dataset.i18n);
    });
    document.querySelectorAll('[data-lang-button]').forEach(function (b) {
      b.setAttribute('aria-pressed', String(b.dataset.langButton === lang));
    });
    document.title = 'Sori · ' + t('title');
    document.getElementById('min-calls').textContent = String(cfg.minCalls);
  }

  // Controls.
  var el = {
    range: document.getElementById('range'),
    metric: document.getElementById('metric'),
    split: document.getElementById('split'),
    tagkey: document.getElementById('tagkey'),
    tagkeyLabel: document.getElementById('tagkey-label'),
    trendHop: document.getElementById('trend-hop'),
    status: document.getElementById('status'),
    heat: document.getElementById('heat'),
    trend: document.getElementById('trend'),
    summary: document.querySelector('#summary tbody'),
    worst: document.querySelector('#worst tbody'),
    worstSection: document.getElementById('worst-section')
  };
  cfg.tagKeys.forEach(function (k) {
    var o = document.createElement('option');
    o.value = k;
    o.textContent = k;
    el.tagkey.appendChild(o);
  });
  if (!cfg.isPublic && cfg.worst) {
    el.worstSection.hidden = false;
  }
  if (cfg.isPublic) {
    document.getElementById('heat-note').dataset.i18n = 'heat.note.public';
  }

  // The view is kept in the address (#metric=mos&split=tag&tag=plan), so
  // a link shows what its sender saw.
  var hashKeys = { range: el.range, metric: el.metric, split: el.split, tag: el.tagkey, hop: el.trendHop };
  function readHash() {
    var p = new URLSearchParams(window.location.hash.slice(1));
    Object.keys(hashKeys).forEach(function (k) {
      var v = p.get(k);
      var sel = hashKeys[k];
      if (v !== null && Array.prototype.some.call(sel.options, function (o) { return o.value === v; })) {
        sel.value = v;
      }
    });
  }
  function writeHash() {
    var p = new URLSearchParams();
    Object.keys(hashKeys).forEach(function (k) {
      if (hashKeys[k].value) { p.set(k, hashKeys[k].value); }
    });
    window.history.replaceState(null, '', '#' + p.toString());
  }
  readHash();

  // Formatting.
  function pct(v, digits) {
    return v === null || v === undefined ? t('none') : v.toFixed(digits === undefined ? 2 : digits) + ' %';
  }
  function share(s) {
    return (100 * s.share).toFixed(1) + ' % [' + (100 * s.lo).toFixed(1) + '–' + (100 * s.hi).toFixed(1) + ']';
  }
  function mos(m) {
    if (!m) {
      return t('none');
    }
    var s = m.mean.toFixed(2);
    if (m.lo !== null && m.hi !== null) {
      s += ' [' + m.lo.toFixed(2) + '–' + m.hi.toFixed(2) + ']';
    }
    return s;
  }
  function metricValue(metric, v) {
    if (v === null || v === undefined) {
      return t('none');
    }
    switch (metric) {
      case 'over1':
      case 'over5':
        return (100 * v).toFixed(1) + ' %';
      case 'mos':
        return v.toFixed(2);
      case 'jitter':
        return v.toFixed(0) + ' ms';
      default:
        return v.toFixed(2) + ' %';
    }
  }
  function two(n) {
    return (n < 10 ? '0' : '') + n;
  }
  function hourLabel(d, withDay) {
    var h = two(d.getHours()) + ':00';
    return withDay ? two(d.getMonth() + 1) + '-' + two(d.getDate()) + ' ' + h : h;
  }
  function isoHour(ms) {
    return new Date(ms).toISOString().replace('.000Z', 'Z');
  }
  var esc = function (s) {
    return window.echarts.format.encodeHTML(String(s));
  };

  // The colour scale of each metric: from good to bad.
  var scales = {
    over1: { min: 0, max: 0.2 },
    over5: { min: 0, max: 0.1 },
    loss: { min: 0, max: 5 },
    p50: { min: 0, max: 5 },
    p90: { min: 0, max: 10 },
    jitter: { min: 0, max: 100 },
    mos: { min: 3, max: 4.5, reverse: true }
  };
  var goodToBad = ['#1a9850', '#91cf60', '#fee08b', '#fc8d59', '#d73027'];

  function splitDim() {
    switch (el.split.value) {
      case 'access':
        return 'access';
      case 'tag':
        return el.tagkey.value ? 'tag:' + el.tagkey.value : '';
      default:
        return 'hop';
    }
  }
  function groupLabel(dim, v) {
    if (dim === 'hop') {
      return t('hop.' + v);
    }
    if (dim.indexOf('tag:') === 0) {
      return dim.slice(4) + ' = ' + v;
    }
    return v;
  }

  function url(by) {
    var p = new URLSearchParams({ from: '-' + el.range.value, to: 'now', by: by.join(','), metric: el.metric.value });
    return cfg.api + '?' + p.toString();
  }
  function getJSON(u) {
    return fetch(u, { headers: { Accept: 'application/json' }, credentials: 'same-origin' }).then(function (r) {
      return r.json().catch(function () { return null; }).then(function (b) {
        if (!r.ok) {
          throw new Error((b && b.error) || r.status + ' ' + r.statusText);
        }
        return b;
      });
    });
  }

  var charts = [];
  function disposeCharts() {
    charts.forEach(function (c) { c.dispose(); });
    charts = [];
  }
  window.addEventListener('resize', function () {
    charts.forEach(function (c) { c.resize(); });
  });

  function hoursOf(resp) {
    var from = Date.parse(resp.from);
    from -= from % 3600000;
    var to = Date.parse(resp.to);
    var list = [];
    for (var h = from; h < to; h += 3600000) {
      list.push(h);
    }
    return list;
  }

  function tooltip(row, network, group, metric) {
    var lines = ['<b>' + esc(network) + '</b> · ' + esc(group), esc(row.calls + ' ' + t('calls') + (row.enough ? '' : ' (' + t('few') + ')'))];
    if (['over5', 'p50', 'jitter'].indexOf(metric) >= 0) { // the others have their line below
      lines.push(esc(t(metric) + ': ' + metricValue(metric, row.value)));
    }
    lines.push(esc(t('over1') + ': ' + share(row.over1) + ' ' + t('ci')));
    if (row.mos) {
      lines.push(esc(t('mos') + ': ' + mos(row.mos) + ' ' + t('ci')));
    } else {
      lines.push(esc(t('nomos')));
    }
    lines.push(esc(t('p90') + ': ' + pct(row.p90_loss_pct) + ' · ' + t('loss') + ': ' + pct(row.loss_pct, 3)));
    return lines.join('<br>');
  }

  function drawHeat(resp, dim) {
    var metric = resp.metric;
    var hours = hoursOf(resp);
    var index = {};
    hours.forEach(function (h, i) { index[isoHour(h)] = i; });
    var withDay = hours.length > 24;
    var labels = hours.map(function (h) { return hourLabel(new Date(h), withDay); });
    var networks = [];
    var groups = [];
    resp.rows.forEach(function (r) {
      if (networks.indexOf(r.dims.network) < 0) { networks.push(r.dims.network); }
      if (groups.indexOf(r.dims[dim]) < 0) { groups.push(r.dims[dim]); }
    });
    networks.sort();
    groups.sort(function (a, b) {
      if (dim === 'hop') { return a === 'uplink' ? -1 : b === 'uplink' ? 1 : 0; }
      return a < b ? -1 : a > b ? 1 : 0;
    });
    el.heat.textContent = '';
    if (groups.length === 0) {
      var p = document.createElement('p');
      p.className = 'note';
      p.textContent = t('nodata');
      el.heat.appendChild(p);
      return;
    }
    var scale = scales[metric];
    groups.forEach(function (g) {
      var h3 = document.createElement('h3');
      h3.textContent = groupLabel(dim, g);
      var div = document.createElement('div');
      div.className = 'chart heat';
      div.style.height = Math.max(170, 84 + 28 * networks.length + (hours.length > 48 ? 40 : 0)) + 'px';
      el.heat.appendChild(h3);
      el.heat.appendChild(div);
      var rows = resp.rows.filter(function (r) { return r.dims[dim] === g; });
      var good = [];
      var few = [];
      rows.forEach(function (r, i) {
        var x = index[r.dims.hour];
        if (x === undefined) { return; }
        var y = networks.indexOf(r.dims.network);
        if (r.enough && r.value !== null) {
          good.push([x, y, r.value, i]);
        } else {
          few.push([x, y, r.calls, i]);
        }
      });
      var chart = window.echarts.init(div);
      charts.push(chart);
      chart.setOption({
        animation: false,
        grid: { left: 120, right: 24, top: 8, bottom: hours.length > 48 ? 110 : 74 },
        tooltip: {
          formatter: function (p) {
            var r = rows[p.data[3]];
            return tooltip(r, r.dims.network, hourLabel(new Date(Date.parse(r.dims.hour)), true) + ' · ' + groupLabel(dim, g), metric);
          }
        },
        xAxis: { type: 'category', data: labels, splitArea: { show: true } },
        yAxis: { type: 'category', data: networks, splitArea: { show: true } },
        visualMap: {
          // dimension 2 is the value (3, the default last one, is the row).
          type: 'continuous', seriesIndex: 0, dimension: 2, min: scale.min, max: scale.max, calculable: false,
          orient: 'horizontal', left: 'center', bottom: 0, itemHeight: 160, itemWidth: 12,
          // The ends' values beside the bar, not above it where the hours are.
          text: [metricValue(metric, scale.max) + (scale.reverse ? '' : '+'), metricValue(metric, scale.min) + (scale.reverse ? '−' : '')],
          inRange: { color: scale.reverse ? goodToBad.slice().reverse() : goodToBad },
          formatter: function (v) { return metricValue(metric, v); }
        },
        dataZoom: hours.length > 48 ? [{ type: 'slider', xAxisIndex: 0, bottom: 44, startValue: hours.length - 48, endValue: hours.length - 1 }] : [],
        series: [
          { name: 'enough', type: 'heatmap', data: good, emphasis: { itemStyle: { borderColor: '#222', borderWidth: 1 } } },
          {
            name: 'few', type: 'heatmap', data: few,
            itemStyle: { color: '#d9d9d9', borderColor: '#fff', borderWidth: 1 },
            label: { show: hours.length <= 48, color: '#555', fontSize: 10, formatter: function (p) { return String(p.data[2]); } },
            emphasis: { itemStyle: { borderColor: '#222', borderWidth: 1 } }
          }
        ]
      });
    });
  }

  function drawTrend(resp) {
    var metric = resp.metric;
    var hop = el.trendHop.value;
    var byNet = {};
    resp.rows.forEach(function (r) {
      if (r.dims.hop !== hop) { return; }
      var n = r.dims.network;
      (byNet[n] = byNet[n] || {})[r.dims.hour] = r;
    });
    var hours = hoursOf(resp);
    var names = Object.keys(byNet).sort();
    var chart = window.echarts.init(el.trend);
    charts.push(chart);
    chart.setOption({
      animation: false,
      legend: { type: 'scroll', top: 0 },
      grid: { left: 60, right: 24, top: 36, bottom: 40 },
      tooltip: {
        trigger: 'axis',
        formatter: function (ps) {
          if (!ps.length) { return ''; }
          var out = [esc(hourLabel(new Date(ps[0].value[0]), true))];
          ps.forEach(function (p) {
            var r = byNet[p.seriesName][isoHour(p.value[0])];
            if (r) {
              out.push(p.marker + esc(p.seriesName + ': ' + metricValue(metric, r.value) + ' (n=' + r.calls + '; ' + t('over1') + ' ' + share(r.over1) + ')'));
            }
          });
          return out.join('<br>');
        }
      },
      xAxis: { type: 'time', axisLabel: { formatter: { year: '{yyyy}', month: '{MM}-{dd}', day: '{MM}-{dd}', hour: '{HH}:{mm}', minute: '{HH}:{mm}' } } },
      yAxis: {
        type: 'value', inverse: false, scale: metric === 'mos',
        axisLabel: { formatter: function (v) { return metricValue(metric, v); } }
      },
      series: names.map(function (n) {
        return {
          name: n, type: 'line', showSymbol: hours.length <= 48, connectNulls: false,
          data: hours.map(function (h) {
            var r = byNet[n][isoHour(h)];
            return [h, r && r.enough && r.value !== null ? r.value : null];
          })
        };
      })
    });
  }

  function cell(tr, text, cls) {
    var td = document.createElement('td');
    td.textContent = text;
    if (cls) { td.className = cls; }
    tr.appendChild(td);
    return td;
  }

  function drawSummary(resp) {
    el.summary.textContent = '';
    resp.rows.forEach(function (r) {
      var tr = document.createElement('tr');
      if (!r.enough) {
        tr.className = 'few';
        tr.title = t('few');
      }
      cell(tr, r.dims.network);
      cell(tr, t('hop.' + r.dims.hop + '.short'));
      cell(tr, String(r.calls), 'num');
      cell(tr, pct(r.loss_pct, 3), 'num');
      cell(tr, share(r.over1), 'num');
      cell(tr, share(r.over5), 'num');
      cell(tr, pct(r.p50_loss_pct), 'num');
      cell(tr, pct(r.p90_loss_pct), 'num');
      cell(tr, mos(r.mos), 'num');
      cell(tr, r.jitter_ms.toFixed(1) + ' ms', 'num');
      el.summary.appendChild(tr);
    });
  }

  function drawWorst(resp) {
    el.worst.textContent = '';
    resp.calls.forEach(function (c) {
      var tr = document.createElement('tr');
      var td = document.createElement('td');
      var a = document.createElement('a');
      a.href = '/api/calls/' + encodeURIComponent(c.call_id);
      a.textContent = c.call_id;
      td.appendChild(a);
      td.className = 'callid';
      tr.appendChild(td);
      cell(tr, t('side.' + c.side));
      cell(tr, t('hop.' + c.hop + '.short'));
      cell(tr, c.network);
      cell(tr, c.access);
      cell(tr, pct(c.loss_pct), 'num');
      cell(tr, c.mos ? c.mos.toFixed(1) : t('none'), 'num');
      cell(tr, c.jitter_ms + ' ms', 'num');
      var end = new Date(c.end);
      cell(tr, end.getFullYear() + '-' + two(end.getMonth() + 1) + '-' + two(end.getDate()) + ' ' + two(end.getHours()) + ':' + two(end.getMinutes()));
      el.worst.appendChild(tr);
    });
  }

  var generation = 0;
  function render() {
    var gen = ++generation;
    writeHash();
    el.tagkeyLabel.hidden = el.split.value !== 'tag';
    var dim = splitDim();
    disposeCharts();
    var note = cfg.isPublic ? t('public.note', cfg.minCalls) + ' ' : '';
    el.status.textContent = note + t('loading');
    el.status.classList.remove('error');
    var jobs = [
      dim ? getJSON(url(['network', 'hour', dim])) : Promise.resolve(null),
      dim === 'hop' ? null : getJSON(url(['network', 'hour', 'hop'])), // the heat map's own when split by hop
      getJSON(url(['network', 'hop'])),
      cfg.worst && !cfg.isPublic ? getJSON(cfg.worst) : Promise.resolve(null)
    ];
    Promise.all(jobs).then(function (res) {
      if (gen !== generation) { return; } // a newer choice is on its way
      el.status.textContent = note + t('trend.note', cfg.minCalls);
      if (res[0]) {
        drawHeat(res[0], dim);
      } else {
        el.heat.textContent = t('notags');
      }
      drawTrend(res[1] || res[0]);
      drawSummary(res[2]);
      if (res[3]) { drawWorst(res[3]); }
    }).catch(function (err) {
      if (gen !== generation) { return; }
      el.status.textContent = t('error') + err.message;
      el.status.classList.add('error');
    });
  }

  document.querySelectorAll('[data-lang-button]').forEach(function (b) {
    b.addEventListener('click', function () {
      lang = b.dataset.langButton;
      try {
        window.localStorage.setItem('sori.quality.lang', lang);
      } catch (e) { /* storage may be off */ }
      applyLang();
      render();
    });
  });
  [el.range, el.metric, el.split, el.tagkey, el.trendHop].forEach(function (s) {
    s.addEventListener('change', render);
  });
  document.getElementById('controls').addEventListener('submit', function (e) { e.preventDefault(); });

  applyLang();
  render();
}());
