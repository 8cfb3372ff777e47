// A small inline SVG bar chart of spend per day over the current period.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 160;
const PAD_TOP = 16;
const PAD_BOTTOM = 22;

function svg(tag, attrs = {}, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs))
    element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

// `days`: [{date: "YYYY-MM-DD", spend: number}], in order. `today`: "YYYY-MM-DD".
export function spendChart(days, today) {
  const most = Math.max(0, ...days.map((day) => day.spend));
  const total = days.reduce((sum, day) => sum + day.spend, 0);
  const label = days.length
    ? `Spend per day from ${days[0].date} to ${days[days.length - 1].date}: ` +
      `$${total.toFixed(2)} in all, at most $${most.toFixed(2)} in one day`
    : "No days in this period";
  const chart = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart",
    role: "img",
    "aria-label": label,
    id: "spend-chart",
  });
  chart.append(svg("title", {}, label));
  const usable = HEIGHT - PAD_TOP - PAD_BOTTOM;
  const slot = days.length ? WIDTH / days.length : WIDTH;
  days.forEach((day, index) => {
    const height =
      most > 0 ? Math.max(day.spend > 0 ? 2 : 0, (day.spend / most) * usable) : 0;
    const bar = svg("rect", {
      x: (index * slot + slot * 0.15).toFixed(2),
      y: (PAD_TOP + usable - height).toFixed(2),
      width: (slot * 0.7).toFixed(2),
      height: height.toFixed(2),
      class: day.date === today ? "bar bar-today" : "bar",
      "data-date": day.date,
    });
    bar.append(svg("title", {}, `${day.date}: $${day.spend.toFixed(2)}`));
    chart.append(bar);
  });
  chart.append(
    svg("line", {
      x1: 0,
      x2: WIDTH,
      y1: PAD_TOP + usable,
      y2: PAD_TOP + usable,
      class: "axis",
    }),
  );
  if (days.length) {
    chart.append(svg("text", { x: 2, y: HEIGHT - 6, class: "tick" }, days[0].date));
    chart.append(
      svg(
        "text",
        { x: WIDTH - 2, y: HEIGHT - 6, class: "tick end" },
        days[days.length - 1].date,
      ),
    );
  }
  chart.append(svg("text", { x: 2, y: 12, class: "tick" }, `max $${most.toFixed(2)}`));
  return chart;
}
