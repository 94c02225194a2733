/** Code page 437 (the VGA ROM font's character set) to Unicode; character 0 shows as a space. */
const LOW = ' ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼';
const HIGH = 'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';

export const CP437: readonly string[] = (() => {
  const table: string[] = [...LOW];
  for (let c = 0x20; c < 0x7f; c++) table.push(String.fromCharCode(c));
  table.push('⌂');
  table.push(...HIGH);
  if (table.length !== 256) throw new Error('CP437 table size');
  return table;
})();
