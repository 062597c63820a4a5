// Files the Worker imports as text (wrangler.toml's `Text` rule): the default export is the file's content.
declare module "*.html" {
  const text: string;
  export default text;
}
declare module "*.css" {
  const text: string;
  export default text;
}
declare module "*dashboard.client.js" {
  const text: string;
  export default text;
}
declare module "echarts/dist/echarts.common.min.js" {
  const text: string;
  export default text;
}
