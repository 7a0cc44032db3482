"""A small, deterministic demo corpus with a graded gold query set.

``generate_demo_corpus(corpus_dir, gold_path)`` writes about forty files (Markdown, plain
text, HTML and PDF documents, JPEG and PNG images with EXIF/XMP/sidecar metadata) and a
JSONL gold file of queries with graded relevance judgements. Everything is generated
locally from text written for this module: nothing is downloaded and nothing is copied.

Determinism: the same call writes the same bytes every time (fixed dates, seeded
randomness, fixed file mtimes), so a snapshot built from the corpus is reproducible.

This module deliberately does not import Dagster.
"""

from __future__ import annotations

import html
import json
import math
import os
import random
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape as _xml_escape

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin
from pydantic import BaseModel

__all__ = [
    "GOLD_FILENAME",
    "HTML_SCRIPT_SENTINEL",
    "DemoCorpus",
    "GoldQuery",
    "generate_demo_corpus",
    "read_gold",
]

GOLD_FILENAME = "gold.jsonl"

#: A token that appears only inside ``<script>`` elements of the HTML documents. A search
#: for it must return nothing: scripts are not content.
HTML_SCRIPT_SENTINEL = "zqxjv_script_sentinel"

#: Every file gets a fixed mtime: this base (2024-01-15 09:00:00 UTC) plus one hour per
#: file, in sorted path order.
_MTIME_BASE = 1705309200

QueryType = Literal["keyword", "semantic", "visual", "mixed"]


class DemoCorpus(BaseModel):
    """What ``generate_demo_corpus`` wrote."""

    corpus_dir: Path
    gold_path: Path
    n_documents: int
    n_images: int
    n_queries: int
    files: list[str]  # every file written under corpus_dir, relative POSIX paths, sorted


class GoldQuery(BaseModel):
    """One line of the gold file. ``relevant`` maps corpus-relative paths to grades:
    2 = the answer, 1 = related."""

    query_id: str
    query: str
    query_type: QueryType
    relevant: dict[str, int]


def read_gold(path: Path) -> list[GoldQuery]:
    """Read a gold JSONL file written by ``generate_demo_corpus``."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [GoldQuery.model_validate_json(line) for line in lines if line.strip()]


# ---------------------------------------------------------------------------------------
# Document model and texts
# ---------------------------------------------------------------------------------------

Paragraph = str | tuple[str, ...]  # a tuple is a bulleted list


@dataclass(frozen=True)
class _Section:
    heading: str | None
    paragraphs: tuple[Paragraph, ...]
    new_page: bool = False  # PDF only: start this section on a new page


@dataclass(frozen=True)
class _Doc:
    path: str
    title: str
    description: str
    sections: tuple[_Section, ...]
    author: str = "rag_pipeline demo corpus"


def _norm(text: str) -> str:
    return " ".join(text.split())


def _s(heading: str | None, *paragraphs: Paragraph, new_page: bool = False) -> _Section:
    normed: list[Paragraph] = []
    for p in paragraphs:
        if isinstance(p, tuple):
            normed.append(tuple(_norm(item) for item in p))
        else:
            normed.append(_norm(p))
    return _Section(heading, tuple(normed), new_page)


def _doc(path: str, title: str, description: str, *sections: _Section, author: str | None = None) -> _Doc:
    return _Doc(path, title, _norm(description), tuple(sections), author or "rag_pipeline demo corpus")


_DOCUMENTS: tuple[_Doc, ...] = (
    # ----------------------------------------------------------------- kitchen
    _doc(
        "docs/kitchen/sourdough_starter.md",
        "Keeping a Sourdough Starter Alive",
        "How to feed, store and revive a wild-yeast sourdough starter, and how to tell when it is ready to bake with.",
        _s(
            "What a starter is",
            """A sourdough starter is a paste of flour and water colonised by wild yeast and lactic
            acid bacteria. The yeast produces the carbon dioxide that raises the loaf, while the
            bacteria produce lactic and acetic acids that give sourdough its tang and its long
            keeping quality. Unlike a packet of instant yeast, a starter is a living culture: it has
            to be fed, and it responds to temperature, flour type and hydration in ways that reward
            attention.""",
        ),
        _s(
            "Feeding schedule",
            """Most bakers keep a starter at 100 percent hydration, meaning equal weights of flour
            and water. A typical feed discards all but 25 grams of the old culture and adds 50 grams
            of flour and 50 grams of lukewarm water. At a kitchen temperature of 24 °C the culture
            will roughly double within four to six hours and then collapse as it runs out of food.
            That peak is the moment to use it or to feed it again.""",
            """Whole rye flour speeds fermentation because it carries more enzymes and wild microbes
            than white bread flour. If a starter has become sluggish, two or three feeds with a rye
            blend often bring it back to a predictable rise.""",
        ),
        _s(
            "Signs of a healthy culture",
            (
                "It doubles in volume within six hours of a feed.",
                "The surface is domed and crowded with bubbles, and the texture is stringy when stirred.",
                "It smells of yogurt or ripe fruit rather than nail-polish remover.",
                "A spoonful dropped into water floats, although the float test is unreliable with rye.",
            ),
            """A layer of grey liquid on top, often called hooch, is alcohol produced by hungry
            yeast. It is not a sign of spoilage; pour it off and feed the culture. Pink or orange
            streaks, on the other hand, mean unwanted bacteria have taken over, and the starter
            should be thrown away.""",
        ),
        _s(
            "Storing between bakes",
            """If you bake only at weekends, keep the jar in the refrigerator. Cold slows
            fermentation so much that a weekly feed is enough. Take it out the evening before
            baking, give it two feeds at room temperature, and build the levain from the second
            peak. For holidays, smear a thin layer of starter on baking paper, let it dry
            completely, crumble the flakes and keep them in a sealed jar; a tablespoon of flakes
            soaked in water will revive within three days.""",
        ),
        _s(
            "From levain to loaf",
            """The levain is simply a portion of starter built up to the quantity a recipe needs.
            Mix it into the dough after a thirty-minute autolyse, in which flour and water rest
            together so that gluten begins to form without kneading. During bulk fermentation, a
            series of stretch-and-folds builds strength. Shape the dough, let it proof in a floured
            banneton, score it with a lame, and bake it in a preheated Dutch oven with the lid on
            for the first twenty minutes to trap steam.""",
        ),
    ),
    _doc(
        "docs/kitchen/coffee_roasting.html",
        "Home Coffee Roasting: From Green Beans to First Crack",
        """A practical guide to roasting green coffee at home, covering the stages of a roast,
        first and second crack, and resting the beans.""",
        _s(
            "Why roast at home",
            """Green coffee keeps for a year or more, while roasted coffee starts to go stale within
            a few weeks. Roasting small batches at home means every cup is brewed from beans at
            their best, and green coffee costs considerably less than the roasted equivalent. The
            equipment can be as simple as a hot-air popcorn popper or as elaborate as a countertop
            drum roaster with a temperature probe and a data logger.""",
        ),
        _s(
            "The stages of a roast",
            """During the drying phase the beans lose moisture and turn from green to pale yellow,
            smelling of hay and fresh bread. Browning follows, driven by the Maillard reaction
            between sugars and amino acids, and the beans darken to tan while the aroma shifts
            toward toast and caramel. At around 196 °C the trapped steam and carbon dioxide break
            the bean structure with an audible snap known as first crack. Light roasts are dropped
            shortly after first crack begins.""",
            """If heating continues, the beans pass through a quieter development phase and
            eventually reach second crack, a faster crackling like rice cereal in milk, at which
            point oils migrate to the surface. Beyond second crack the origin flavours are replaced
            by smoky, bitter roast character.""",
        ),
        _s(
            "Measuring development",
            """Many roasters track the development time ratio, the share of the total roast that
            elapses after first crack. A ratio between 15 and 25 percent suits most filter coffee.
            Too short and the cup tastes grassy and sour; too long and it turns flat and baked.
            Logging bean temperature every thirty seconds makes it possible to repeat a roast you
            liked.""",
        ),
        _s(
            "Cooling, chaff and resting",
            """Cool the beans within four minutes by tipping them into a metal colander and
            stirring, or by using the cooling tray of a drum roaster. The papery skins that flake
            off, called chaff, are flammable, so roast outdoors or under a strong extractor hood
            and empty the chaff collector after every batch. Freshly roasted coffee releases carbon
            dioxide for several days; this degassing is why espresso made on the day of roasting
            gushes and tastes sharp. Rest filter roasts for two to four days and espresso roasts for
            a week before brewing.""",
        ),
    ),
    _doc(
        "docs/kitchen/kimchi_fermentation.txt",
        "Making Napa Cabbage Kimchi",
        "A method for salting, seasoning and fermenting napa cabbage kimchi at home.",
        _s(
            None,
            """Kimchi is a family of Korean fermented vegetables, and the most familiar version is
            made from napa cabbage seasoned with chili, garlic, ginger and fish sauce. The method is
            forgiving, but salt concentration and temperature decide whether the result is crisp
            and lively or soft and flat.""",
            """Start by quartering two heads of napa cabbage lengthwise and salting them between the
            leaves, using about 3 percent of the cabbage weight in coarse sea salt. Leave the
            quarters for two hours, turning them every thirty minutes, until the thick white ribs
            bend without snapping. Rinse three times in cold water and let the cabbage drain cut
            side down.""",
            """While it drains, make a paste from a thin rice-flour porridge, gochugaru chili
            flakes, minced garlic, grated ginger, fish sauce and a little sugar. The porridge helps
            the paste cling to the leaves and gives the lactic acid bacteria an easy first meal.
            Stir in julienned radish and spring onions. Wearing gloves, rub the paste between every
            leaf, fold each quarter in half and pack it tightly into a jar or a traditional
            earthenware onggi, pressing out air pockets as you go.""",
            """Leave the jar at room temperature for one to two days. Fermentation is driven mostly
            by Leuconostoc species early on and by Lactobacillus later, and it produces small
            bubbles and a pleasantly sour smell. Press the cabbage down each day so it stays
            submerged in its own brine. Once it tastes tangy enough, move it to the refrigerator,
            where it keeps for months and grows more sour over time. Very sour kimchi is not
            wasted: it is the best kind for kimchi stew and fried rice.""",
        ),
    ),
    _doc(
        "docs/kitchen/cast_iron_care.pdf",
        "Caring for Cast Iron Cookware",
        "Seasoning, cleaning, storing and restoring cast iron skillets.",
        _s(
            "Seasoning explained",
            """Seasoning is not a coating of old grease. It is a thin layer of polymerised oil,
            formed when fat is heated past its smoke point and bonds to the surface of the metal as
            a hard, slick film. Each time you cook with fat the layer thickens slightly, which is
            why a well-used skillet becomes more non-stick over the years.""",
            """To season a skillet in the oven, wash it, dry it over a burner, and rub a very small
            amount of oil over every surface, including the handle and the underside. Then wipe off
            as much as you can, as if you had applied too much by mistake. Bake it upside down at
            250 C for an hour and let it cool in the oven. Repeat three to five times for a new or
            stripped pan. Flaxseed oil produces a hard finish but can flake; vegetable shortening
            and canola oil are more forgiving.""",
        ),
        _s(
            "Everyday cleaning",
            """Clean the pan while it is still warm. Hot water and a stiff brush remove most
            residue, and a chainmail scrubber lifts stuck-on bits without harming the seasoning. A
            drop of mild dish soap is fine on a well-seasoned pan; it was the lye-based soaps of the
            past that stripped seasoning. Never leave cast iron to soak in the sink, and always dry
            it on a low flame before putting it away with a thin film of oil.""",
        ),
        _s(
            "Restoring a rusty skillet",
            """Rust on cast iron looks alarming but is usually shallow. For light spots, scour the
            area with steel wool and a paste of coarse salt and oil, rinse, dry on the stove, and
            re-season. For a skillet covered in red rust, soak it in a mixture of equal parts white
            vinegar and water for no more than an hour, checking every fifteen minutes. The acid
            dissolves the iron oxide, but it attacks bare metal too, so a forgotten pan can come out
            pitted.""",
            """After the soak, scrub the loosened rust away, rinse thoroughly, and dry the pan
            immediately on a burner, because bare iron can flash-rust within minutes. Then apply
            several thin coats of seasoning in the oven as described on the previous page.""",
            """Collectors restoring antique pans sometimes use electrolysis instead: the skillet is
            suspended in a bath of washing soda solution and connected to the negative terminal of
            a battery charger, with a sacrificial steel plate on the positive terminal. Over a day
            or two the rust converts to a loose black layer that wipes away, leaving the original
            casting marks intact.""",
            new_page=True,
        ),
        _s(
            "Storage and acidic foods",
            """Store cast iron in a dry cupboard with the lid off, or with a paper towel between
            stacked pans to absorb moisture. Long simmers of tomato sauce or wine can strip a young
            seasoning and give food a metallic taste, so save acidic dishes until the pan has built
            up a durable layer.""",
        ),
        author="Demo Kitchen Notes",
    ),
    _doc(
        "docs/kitchen/knife_sharpening.md",
        "Sharpening Kitchen Knives on Whetstones",
        "Honing, choosing water stones, holding a steady angle and raising a burr.",
        _s(
            "Honing versus sharpening",
            """A honing rod does not remove metal in any meaningful amount. It straightens an edge
            that has rolled over during use, which is why a few strokes before cooking make a knife
            feel sharper. Sharpening, by contrast, grinds away steel to form a new edge, and it is
            needed only every few months for a home cook.""",
        ),
        _s(
            "Choosing stones",
            """Water stones are graded by grit. A 1000-grit stone sets the edge and repairs small
            chips; a 3000 to 6000 grit stone refines and polishes it. Soak-type stones should sit in
            water until they stop releasing bubbles, while splash-and-go stones need only a wet
            surface. Flatten stones regularly with a lapping plate, because a dished stone produces
            a rounded edge.""",
        ),
        _s(
            "Holding the angle",
            """Most Western chef's knives are ground at about 20 degrees per side and many Japanese
            knives at about 15. Holding a constant angle matters more than the exact number. A
            useful trick is to stack two coins under the spine to feel the height, then keep the
            wrist locked as you push the blade across the stone in smooth strokes from heel to
            tip.""",
        ),
        _s(
            "Raising and removing the burr",
            """Work one side until a burr, a thin wire of folded metal, can be felt along the entire
            opposite edge with a fingertip drawn away from the edge. Only then switch sides. On the
            finishing stone, alternate single light strokes on each side to shrink the burr, and
            finish by stropping on leather or newspaper. Test on a sheet of paper: a sharp edge
            slices cleanly without snagging.""",
        ),
    ),
    # ---------------------------------------------------------------- outdoors
    _doc(
        "docs/outdoors/beekeeping.md",
        "A First Year with a Langstroth Hive",
        "Setting up a hive, routine inspections, varroa mite control, harvesting and wintering.",
        _s(
            "Setting up",
            """A Langstroth hive is a stack of rectangular boxes holding removable frames spaced at
            exactly the bee space, about 9 millimetres, which the bees leave open instead of filling
            with comb or propolis. The bottom one or two deep boxes form the brood chamber where the
            queen lays eggs. Shallower boxes called honey supers go on top once the colony is
            strong, usually with a queen excluder between them so that the honey frames stay free
            of brood.""",
            """Place the hive where it gets morning sun, shelter from the prevailing wind, and a
            clear flight path that does not cross a neighbour's patio. A nearby water source, even a
            shallow dish with pebbles, keeps foragers away from swimming pools.""",
        ),
        _s(
            "Inspections",
            """Inspect every seven to ten days in spring and early summer. Light the smoker with
            pine needles or burlap, puff gently at the entrance, wait a minute and then lift the
            cover. Work slowly, lifting frames straight up and holding them over the box. On each
            inspection look for eggs, which confirm the queen was laying in the last three days;
            capped brood in a solid pattern; stores of pollen and nectar; and queen cells.""",
            """Queen cells hanging from the bottom edge of frames are swarm cells, a sign the colony
            is preparing to split and leave with the old queen. Making a split into a second hive,
            or adding space early, is the usual response.""",
        ),
        _s(
            "Varroa mites",
            """The parasitic mite Varroa destructor is the most serious threat to a colony. Mites
            feed on developing bees and spread deformed wing virus. Monitor them monthly with an
            alcohol wash or a sugar roll of about 300 bees taken from a brood frame; more than three
            mites per hundred bees in late summer calls for treatment. Common options include
            formic acid strips during the season and oxalic acid vaporisation in early winter, when
            the colony is broodless and every mite is exposed.""",
        ),
        _s(
            "Harvest and winter",
            """Take honey only from supers, never from the brood chamber, and leave a strong colony
            at least 25 to 30 kilograms of stores for winter in a temperate climate. Frames are
            ready when at least four-fifths of the cells are capped with wax. Reduce the entrance in
            autumn to help the bees defend against wasps and mice, and tilt the hive slightly
            forward so condensation drains out.""",
        ),
    ),
    _doc(
        "docs/outdoors/tide_pools.txt",
        "Exploring Tide Pools Responsibly",
        "Reading a tide table, the zones of the rocky shore, and tide pool etiquette.",
        _s(
            "Reading the tide table",
            """The best tide pooling happens on a minus tide, when the water drops below the average
            low-water mark and exposes the lowest band of the shore. Check a tide table for your
            harbour, arrive an hour before the predicted low, and keep an eye on the sea as it
            turns. Rocks near the waterline are often covered with slippery algae, so wear shoes
            with good grip and keep your hands free.""",
        ),
        _s(
            "Zones of the intertidal",
            """The shore is divided into bands by how long each is exposed to air. The splash zone
            at the top is home to periwinkle snails and lichens that tolerate drying. Below it, the
            high intertidal holds barnacles and limpets clamped tightly to the rock. The middle zone
            is crowded with mussel beds and goose barnacles, and the low intertidal, uncovered only
            on the biggest tides, holds the richest life: ochre sea stars, giant green anemones,
            purple urchins, and sometimes a brightly coloured nudibranch.""",
        ),
        _s(
            "Etiquette",
            """Look with your eyes first. If you turn over a rock to see what hides beneath, roll it
            back exactly as it was, because the creatures underneath are adapted to shade and
            moisture. Do not pull sea stars or limpets off the rock; their tube feet and muscles
            tear easily. Hermit crabs may be picked up gently and returned to the same pool. Never
            take live animals or empty shells home, since empty shells become future homes for
            hermit crabs.""",
        ),
        _s(
            "A note on sea stars",
            """Since 2013, sea star wasting syndrome has killed millions of sea stars along the
            Pacific coast of North America, and some species, such as the sunflower star, have
            almost vanished from shallow water. Recording what you see on a citizen science
            platform helps researchers track their recovery.""",
        ),
    ),
    _doc(
        "docs/outdoors/birdwatching.html",
        "Birding by Ear: Learning Songs and Calls",
        """A beginner's guide to identifying birds by their songs and calls, with mnemonics,
        spectrograms and tips for the dawn chorus.""",
        _s(
            "Songs and calls",
            """Most birds are heard long before they are seen, especially in leafy woodland in late
            spring. Ornithologists distinguish songs, which are longer, patterned phrases used by
            males to defend territory and attract a mate, from calls, which are short notes used
            year-round for alarm, contact and flight. Learning a handful of common songs turns a
            walk in the woods into a census.""",
        ),
        _s(
            "Mnemonics",
            """Memory phrases help fix a song in the mind. The eastern towhee seems to say
            drink-your-tea, the white-throated sparrow whistles old-sam-peabody-peabody, and the
            barred owl asks who-cooks-for-you. The chiffchaff in Europe simply repeats its own name.
            Mnemonics are not literal transcriptions, but their rhythm and pitch pattern are what
            your ear remembers.""",
        ),
        _s(
            "Using a spectrogram",
            """A spectrogram plots sound frequency against time, and it makes the structure of a
            song visible: the rising slur of a robin, the buzzy trill of a warbler, the evenly
            spaced notes of a chipping sparrow. Several free phone apps draw a live spectrogram and
            suggest a species, but treat their suggestions as hints and confirm by sight when you
            can. Mimics such as starlings and mockingbirds confuse both people and software.""",
        ),
        _s(
            "The dawn chorus",
            """Song peaks in the hour around sunrise between April and June. Choose a quiet spot,
            stand still for ten minutes, and write down every distinct voice. Counting with your
            ears first and your 8x42 binoculars second is faster than the other way round.
            Submitting the list as an eBird checklist adds your observations to a long-term record
            used in conservation research.""",
        ),
    ),
    _doc(
        "docs/outdoors/composting.txt",
        "Hot Composting in a Backyard Bin",
        "Balancing browns and greens, building a hot pile, turning it, and fixing common problems.",
        _s(
            None,
            """Compost is made by microbes, and a pile works fastest when they get the right balance
            of carbon, nitrogen, air and water. Carbon-rich browns include dry leaves, straw,
            shredded cardboard and wood chips. Nitrogen-rich greens include grass clippings,
            vegetable scraps, coffee grounds and fresh manure from herbivores. A carbon to nitrogen
            ratio of about 30 to 1 by weight is the target, which in practice means roughly two to
            three buckets of browns for every bucket of greens.""",
            """A hot pile needs mass: at least one cubic metre, so that the centre is insulated by
            the outer layers. Build it in one go, alternating layers and wetting each until the
            material feels like a wrung-out sponge. Within two or three days thermophilic bacteria
            raise the core to between 55 and 65 degrees Celsius. Holding that temperature for
            several days kills most weed seeds and plant pathogens.""",
            """Turn the pile when the temperature starts to fall, moving the cooler outside material
            into the middle. Each turn adds oxygen and triggers a new heating cycle. After three or
            four turns over six to eight weeks the pile no longer heats, and the material, now dark
            and crumbly, needs a further month or two of curing before it goes on the garden.""",
            """A pile that smells of ammonia has too many greens; mix in browns. One that smells
            rotten is too wet and compacted; turn it and add dry straw. One that stays cold and dry
            needs water and more greens. Avoid meat, dairy and oily food in an open bin, as they
            attract rats. Those scraps can go into a sealed bokashi bucket instead, and small
            kitchen quantities are well handled by a worm bin of red wigglers, which produce fine
            vermicompost in a space no bigger than a crate.""",
        ),
    ),
    _doc(
        "docs/outdoors/bicycle_repair.pdf",
        "Roadside and Workshop Bicycle Repair",
        "Fixing a flat tyre, adjusting a rear derailleur, and measuring and replacing a worn chain.",
        _s(
            "Fixing a flat tyre",
            """Most flats are caused by a small sharp object working through the tyre or by a
            pinch, where the tube is trapped between the rim and an obstacle. Shift to the smallest
            rear cog, open the brake quick release if you have rim brakes, and remove the wheel.
            Push one bead of the tyre into the centre channel of the rim, then use two tyre levers
            to lift that bead over the rim wall and work around the wheel.""",
            """Before fitting a new tube, run your fingers carefully around the inside of the tyre
            to find the thorn or glass that caused the puncture; otherwise the new tube will fail
            within a mile. Inflate the tube just enough to give it shape, insert the valve, tuck the
            tube into the tyre, and roll the bead back on with your thumbs, finishing at the valve.
            Presta valves need the small lock nut unscrewed before pumping; Schrader valves are the
            same type used on car tyres.""",
            """A patch kit is lighter than a spare tube. Roughen the area around the hole with the
            supplied sandpaper, spread a thin layer of vulcanising fluid, wait until it turns matt,
            and press the patch firmly in place.""",
        ),
        _s(
            "Adjusting a rear derailleur",
            """When shifting is noisy or the chain skips between cogs, the cause is usually cable
            tension. With the chain on the smallest cog, turn the barrel adjuster on the derailleur
            or shifter anticlockwise a quarter turn at a time while pedalling and shifting up one
            gear. If the chain hesitates to climb, add tension; if it overshoots or rattles against
            the next larger cog, release tension.""",
            """The two limit screws, marked H and L, stop the derailleur from pushing the chain off
            the top or bottom of the cassette. They do not affect indexing and should only be
            touched if the chain falls into the spokes or off the smallest cog. The B-tension screw
            sets the gap between the upper jockey wheel and the largest cog; about five to six
            millimetres is typical.""",
            """If adjustments do not help, check that the derailleur hanger is straight. Hangers
            are designed to bend in a crash to protect the frame, and even a small bend throws every
            gear out of line. A hanger alignment gauge makes the check quick, and a replacement
            hanger costs little.""",
            new_page=True,
        ),
        _s(
            "Chain wear and replacement",
            """A chain does not literally stretch; its pins and rollers wear, so the distance
            between links grows. A worn chain wears the cassette and chainrings in turn, so
            replacing chains early is cheaper than replacing a whole drivetrain. Measure with a
            chain checker: at 0.5 percent elongation on an 11- or 12-speed drivetrain, or 0.75
            percent on older systems, fit a new chain.""",
            """Shorten the new chain to match the old one, or wrap it around the largest chainring
            and largest cog without passing through the derailleur and add two links. Join it with
            the quick link supplied by the manufacturer, pulling the pedals down hard with the rear
            brake on to seat the link. Finally, clean and lubricate: a drop of oil on each roller, a
            few minutes to soak in, and wipe off the excess from the outside, since a dry-looking
            chain attracts less grit.""",
            new_page=True,
        ),
        author="Demo Cycle Workshop",
    ),
    _doc(
        "docs/outdoors/mushroom_foraging.md",
        "Foraging for Wild Mushrooms Safely",
        "The first rule of foraging, key identification features, beginner species and ethical harvesting.",
        _s(
            "The first rule",
            """Never eat a wild mushroom unless you are completely certain of its identity, and
            when in doubt, leave it. Several deadly species, including the death cap and the
            destroying angel, look ordinary and reportedly taste pleasant. Their toxins damage the
            liver, and symptoms may not appear until many hours after the meal, when treatment is
            already difficult. Learning with an experienced forager or a local mycological society
            is the safest start.""",
        ),
        _s(
            "Key features",
            """Identification rests on several features at once: the cap shape and colour, what
            lies underneath (gills, pores or teeth), how the stem attaches, whether there is a ring
            or a cup-like volva at the base, the smell, the habitat, and the spore print. To take a
            spore print, cut off the cap, place it gills down on paper that is half white and half
            black, cover it with a bowl and leave it overnight. The colour of the deposit, white,
            pink, brown or black, narrows the options considerably.""",
        ),
        _s(
            "Good beginner species",
            """Chanterelles are prized by beginners because of their apricot smell and their false
            gills: blunt, forking ridges that run down the stem rather than sharp, separate blades.
            Their lookalike, the jack-o'-lantern, grows in clusters on wood and has true gills.
            Giant puffballs are unmistakable when they are large and pure white inside, but small
            puffballs must be sliced top to bottom to rule out the outline of a developing amanita.
            Morels appear in spring, and their honeycombed caps are hollow from tip to base, unlike
            the false morel, whose cap is wrinkled like a brain and stuffed with cottony tissue.""",
        ),
        _s(
            "Harvesting ethically",
            """Cut or twist mushrooms at the base, carry them in a basket rather than a plastic bag
            so they stay dry, and take only what you will eat. Check local rules; some parks forbid
            collecting altogether.""",
        ),
    ),
    # ----------------------------------------------------------------- science
    _doc(
        "docs/science/volcano_monitoring.pdf",
        "How Volcano Observatories Watch for Eruptions",
        "Seismic networks, gas geochemistry, ground deformation and alert levels at volcano observatories.",
        _s(
            "Why monitor",
            """Most volcanoes give warning before they erupt. Magma rising from depth breaks rock,
            releases gas, and pushes the ground upward, and each of these changes can be measured.
            Observatories combine several data streams, because no single signal reliably predicts
            an eruption on its own.""",
        ),
        _s(
            "Seismic networks",
            """Seismometers are the backbone of monitoring. A network of instruments around the
            edifice records volcano-tectonic earthquakes, caused by rock fracturing as magma forces
            a path, and long-period events, which are thought to come from fluids resonating in
            cracks. A continuous, rhythmic signal called volcanic tremor often accompanies the
            movement of magma or gas shortly before and during an eruption. Analysts watch both the
            rate of events and how their depths change over time; a swarm that migrates upward is a
            classic precursor.""",
            """Infrasound microphones complement the seismic network by detecting low-frequency
            pressure waves from explosions, which can be heard even when cloud hides the
            summit.""",
        ),
        _s(
            "Gas geochemistry",
            """Magma contains dissolved water vapour, carbon dioxide and sulfur compounds that
            escape as it rises and decompresses. Carbon dioxide comes out of solution at greater
            depth than sulfur dioxide, so a rising ratio of carbon dioxide to sulfur dioxide can
            signal that fresh magma is entering the system from below.""",
            """Sulfur dioxide emission rates are measured remotely with ultraviolet spectrometers.
            In the traverse method, an instrument pointing straight up is driven or flown beneath
            the plume, and differential optical absorption spectroscopy, usually called DOAS,
            converts the absorbed ultraviolet light into a column amount of gas. Multiplying the
            integrated column by the wind speed gives a flux in tonnes per day. Networks of scanning
            DOAS instruments now produce this flux automatically many times a day, and satellite
            sensors such as TROPOMI track large plumes from orbit.""",
            """Closer to the vents, MultiGAS stations draw in air and measure carbon dioxide, sulfur
            dioxide and hydrogen sulfide concentrations directly, while field teams still collect
            samples from fumaroles in evacuated bottles for laboratory analysis. A sudden drop in
            gas output is not always good news: it can mean the conduit has become sealed and
            pressure is building.""",
            new_page=True,
        ),
        _s(
            "Ground deformation",
            """When magma accumulates in a reservoir beneath the volcano, the surface inflates,
            sometimes by only a few millimetres. Continuous GNSS stations measure the position of
            benchmarks in three dimensions, and borehole tiltmeters detect tiny changes in slope.
            Satellite radar interferometry, or InSAR, compares radar images taken on different
            passes to map deformation across the whole volcano, revealing patterns that a few
            ground stations would miss.""",
            new_page=True,
        ),
        _s(
            "Alert levels",
            """Observatories translate their interpretation into alert levels for civil
            authorities. In the United States the scale runs from Normal through Advisory and Watch
            to Warning, alongside a colour code for aviation, because ash clouds can stop jet
            engines. Good communication matters as much as good instruments: an alert is only
            useful if people know in advance what it asks them to do.""",
        ),
        author="Demo Geoscience Group",
    ),
    _doc(
        "docs/science/orbital_mechanics.md",
        "Orbital Mechanics for the Curious",
        "Free fall, Kepler's laws, Hohmann transfers, the Oberth effect and gravity assists.",
        _s(
            "Falling around the Earth",
            """An orbit is a state of continuous free fall. A spacecraft in low Earth orbit at about
            400 kilometres altitude travels at roughly 7.7 kilometres per second, fast enough that
            the ground curves away beneath it as quickly as it falls. Astronauts on board feel
            weightless not because gravity is absent, since it is still about 90 percent of its
            surface strength, but because they and their vehicle are falling together.""",
        ),
        _s(
            "Kepler's laws",
            """Johannes Kepler described orbits in three laws early in the seventeenth century.
            Orbits are ellipses with the central body at one focus. A line from the central body to
            the orbiting object sweeps out equal areas in equal times, so the object moves fastest
            at periapsis, its closest point, and slowest at apoapsis, its farthest. And the square
            of the orbital period is proportional to the cube of the semi-major axis, which is why
            geostationary satellites, at about 35,786 kilometres altitude, take a full day to
            circle once.""",
        ),
        _s(
            "Changing orbits",
            """Mission planners budget manoeuvres in delta-v, the change in velocity a spacecraft's
            engines can deliver. The most efficient way to move between two circular orbits in the
            same plane is usually a Hohmann transfer: one burn at the lower orbit raises the
            opposite side of the orbit to the target altitude, and a second burn at that high point
            circularises the orbit. Changing the plane of an orbit is expensive, which is why launch
            sites closer to the equator are prized for geostationary missions.""",
            """Burns are most effective when a spacecraft is moving fastest, deep in a gravity well;
            this is the Oberth effect, and it is why departure burns for other planets are made
            close to Earth.""",
        ),
        _s(
            "Borrowing momentum",
            """A gravity assist lets a probe steal a little of a planet's orbital momentum. By
            passing behind a planet as it moves along its orbit, the probe leaves with more speed
            relative to the Sun, although its speed relative to the planet is unchanged. The
            Voyager probes used a rare alignment of the outer planets to visit Jupiter, Saturn,
            Uranus and Neptune with very little fuel.""",
        ),
    ),
    _doc(
        "docs/science/radiocarbon_dating.txt",
        "How Radiocarbon Dating Works",
        "Carbon-14 production and decay, accelerator mass spectrometry, calibration and contamination.",
        _s(
            None,
            """Cosmic rays striking nitrogen in the upper atmosphere produce a small, steady supply
            of carbon-14, a radioactive isotope of carbon. It is quickly oxidised to carbon dioxide
            and taken up by plants through photosynthesis, and from plants it passes to the animals
            that eat them. While an organism is alive it keeps exchanging carbon with its
            surroundings, so its ratio of carbon-14 to ordinary carbon-12 matches the atmosphere.
            When it dies the exchange stops and the carbon-14 decays, with a half-life of about
            5,730 years.""",
            """Measuring how much carbon-14 is left therefore gives the time since death. Early
            laboratories counted beta particles from decaying atoms, which needed grams of
            material. Modern accelerator mass spectrometry, or AMS, counts the carbon-14 atoms
            directly and can date a single seed or a few milligrams of bone collagen. The practical
            limit is around 50,000 years, after which too little carbon-14 remains to measure
            reliably.""",
            """A raw radiocarbon age is not a calendar date, because the amount of carbon-14 in the
            atmosphere has varied over time with changes in solar activity and the Earth's magnetic
            field. Laboratories convert raw ages into calendar years using a calibration curve built
            from tree rings, lake sediments, corals and cave formations of known age. The
            internationally agreed curve for the Northern Hemisphere is IntCal, updated every few
            years; a separate curve is used for marine samples, which draw on older carbon dissolved
            in the ocean.""",
            """Careful sampling matters as much as measurement. Roots, humic acids from soil and
            even conservation glues can add modern carbon and make a sample look younger than it
            is, so laboratories pretreat samples with acid and alkali washes. The burning of fossil
            fuels since the industrial revolution and the atmospheric nuclear tests of the 1950s and
            1960s have both disturbed the natural carbon-14 level, which is why radiocarbon results
            are reported as years before present, with present fixed at 1950.""",
        ),
    ),
    _doc(
        "docs/science/tardigrades.html",
        "Tardigrades: The Toughest Animals on Earth",
        """An introduction to water bears, microscopic animals that survive drying, freezing and
        radiation by entering a state called cryptobiosis.""",
        _s(
            "Meet the water bear",
            """Tardigrades are microscopic animals, usually less than half a millimetre long, with
            plump bodies and eight stubby legs ending in claws. Under a microscope they lumber
            through water films like tiny bears, which earned them the nickname water bears. More
            than 1,300 species are known, living in ocean sediments, freshwater ponds, and most
            famously in the damp cushions of moss and lichen on walls and tree bark.""",
        ),
        _s(
            "Cryptobiosis",
            """What makes tardigrades famous is their ability to survive conditions that would kill
            almost any other animal. When their moss dries out, they pull in their legs, lose nearly
            all their body water, and curl into a dormant, barrel-shaped form called a tun. In this
            state of cryptobiosis their metabolism becomes nearly undetectable. Tuns have survived
            temperatures close to absolute zero, heating well above the boiling point of water,
            pressures six times greater than at the bottom of the deepest ocean trench, and exposure
            to the vacuum of space on a satellite in 2007. Add water, and within hours they are
            walking again.""",
        ),
        _s(
            "How they do it",
            """Several molecular tricks are involved. Some species accumulate the sugar trehalose,
            which forms a glassy matrix that holds proteins and membranes in shape as water leaves.
            Others rely on intrinsically disordered proteins that vitrify in a similar way. One
            species produces a protein named Dsup, short for damage suppressor, that binds to DNA
            and shields it from radiation; human cells engineered to carry Dsup in the laboratory
            suffered noticeably less DNA damage from X-rays.""",
        ),
        _s(
            "Finding your own",
            """Soak a clump of dry moss in rainwater overnight in a shallow dish, squeeze it out, and
            search the water under a low-power microscope at 20 to 40 times magnification. Patience
            is usually rewarded with a slow, clambering water bear.""",
        ),
    ),
    # -------------------------------------------------------------------- home
    _doc(
        "docs/home/solar_panel_maintenance.md",
        "Maintaining a Rooftop Solar Array",
        "Cleaning, monitoring, hot spots and pest-proofing for a residential photovoltaic system.",
        _s(
            "What actually needs doing",
            """Photovoltaic panels have no moving parts, and a well-installed system needs little
            attention. Most of the work is watching the monitoring data, keeping the glass
            reasonably clean, and catching small problems before they grow. Always treat the array
            as live: panels produce voltage whenever light falls on them, and the DC side of a
            string can exceed 400 volts.""",
        ),
        _s(
            "Soiling and cleaning",
            """Dust, pollen, bird droppings and leaf litter reduce output, a loss called soiling. In
            rainy climates the rain does most of the cleaning and losses stay around two to five
            percent. In dry, dusty regions or near farms, losses can exceed fifteen percent. Clean
            from the ground with a soft brush on an extension pole and deionised water early in the
            morning, while the glass is cool. Avoid pressure washers, abrasive pads and detergents,
            which can damage the anti-reflective coating and void the warranty.""",
        ),
        _s(
            "Reading the monitoring",
            """Compare each day's generation with a clear day in the same month last year rather
            than with yesterday, because output varies with the seasons. A sudden drop in one
            panel's share in a system with micro-inverters or power optimisers points to shading, a
            failed unit or a loose connector. In a string system, a whole string underperforming
            often means a tripped isolator or an inverter fault; the inverter display usually shows
            an error code that the installer can interpret.""",
        ),
        _s(
            "Hot spots and shading",
            """A single shaded or cracked cell can heat up as the rest of the panel pushes current
            through it. Bypass diodes limit the damage by routing current around the affected
            section, but a failed diode or a crack can leave a persistent hot spot that browns the
            backsheet. A thermal camera survey, often offered by installers, finds these
            quickly.""",
        ),
        _s(
            "Pests",
            """Pigeons like the sheltered space beneath panels, and their nests and droppings block
            drainage and can damage cables. Fitting a galvanised mesh skirt around the edge of the
            array keeps birds out without drilling into the panels.""",
        ),
    ),
    _doc(
        "docs/home/knitting_socks.txt",
        "Knitting Your First Pair of Socks",
        "Yarn, needles, gauge, and the anatomy of a top-down sock from cuff to toe.",
        _s(
            None,
            """Socks are a satisfying second project after a scarf: small, portable, and full of
            techniques that transfer to everything else. A fingering-weight wool with about 20
            percent nylon wears well at the heel and toe. Most patterns are worked in the round on a
            set of double-pointed needles, on two circular needles, or on one long circular needle
            using the magic loop method. Choose whichever feels least fiddly; the fabric is the
            same.""",
            """Knit a gauge swatch before you start. Sock patterns usually call for around 32
            stitches per 10 centimetres, and a difference of two stitches across that width changes
            the circumference of a sock by more than a centimetre. Wash and dry the swatch the way
            you will wash the finished socks, then measure.""",
            """A top-down sock begins with a stretchy cast-on such as the long-tail or German
            twisted cast-on, followed by a ribbed cuff of knit two, purl two. The leg is plain
            stockinette until it reaches the ankle. The heel flap is then worked back and forth over
            half the stitches, usually in a slip-stitch pattern for extra thickness. Turning the
            heel uses short rows to cup the back of the foot, and picking up stitches along the
            sides of the flap creates the gusset, which is decreased every other round until the
            original stitch count returns.""",
            """Knit the foot until it is about five centimetres shorter than the wearer's foot, then
            shape the toe with paired decreases on each side. Finish by grafting the last stitches
            together with the Kitchener stitch, a sewn join that imitates a row of knitting and
            leaves no ridge under the toes. The second sock is the real test of patience; many
            knitters cast it on the same day they finish the first.""",
        ),
    ),
    _doc(
        "docs/home/tax_filing_freelancers.pdf",
        "Tax Basics for Freelancers and Sole Proprietors",
        "Estimated quarterly payments, self-employment tax, common forms, deductions and record keeping.",
        _s(
            "A note before you start",
            """This overview describes the general shape of self-employed taxes in the United
            States. Rules and thresholds change every year, and this is not tax advice; check
            current guidance or a qualified preparer before you file.""",
        ),
        _s(
            "No one withholds for you",
            """Employees have income tax withheld from every paycheck. Freelancers do not, so they
            are expected to pay estimated tax four times a year, with payment deadlines in April,
            June, September and January. Missing these payments can bring an underpayment penalty
            even if the full amount is paid with the annual return. A common rule of thumb is to set
            aside 25 to 30 percent of every invoice payment in a separate savings account.""",
        ),
        _s(
            "Self-employment tax",
            """On top of income tax, self-employed people pay self-employment tax, which covers the
            Social Security and Medicare contributions that an employer and employee would normally
            split. It applies to net earnings, meaning income after business expenses, so careful
            expense records reduce it as well as income tax.""",
        ),
        _s(
            "Forms you will see",
            """Clients who pay you 600 dollars or more in a year generally send a Form 1099-NEC
            reporting those payments, and payment platforms may send Form 1099-K. Report all income
            whether or not you receive a form. Business income and expenses are reported on
            Schedule C, and self-employment tax is calculated on Schedule SE.""",
        ),
        _s(
            "Deductible expenses",
            """Ordinary and necessary business costs are deductible: software subscriptions,
            equipment, professional insurance, a share of your phone bill, business travel, and fees
            paid to contractors. A dedicated room used regularly and exclusively for work may
            qualify for the home office deduction, calculated either with a simplified rate per
            square foot or by apportioning actual housing costs. Meals and personal clothing are
            restricted or excluded, so read the rules before claiming them.""",
            new_page=True,
        ),
        _s(
            "Record keeping",
            """Keep a separate bank account for business income and spending, and store receipts
            digitally as soon as you get them. A simple monthly routine of categorising transactions
            in a spreadsheet or accounting app saves days of work in spring. Keep records for at
            least three years after filing, and longer for equipment you depreciate.""",
        ),
        _s(
            "Retirement savings",
            """Freelancers can open retirement accounts designed for the self-employed, such as a
            SEP IRA or a solo 401(k). Contributions reduce taxable income now and make up for the
            employer pension contributions that a salaried job would provide.""",
        ),
        author="Demo Finance Desk",
    ),
    _doc(
        "docs/home/houseplant_propagation.md",
        "Propagating Houseplants from Cuttings",
        "Stem cuttings in water, leaf cuttings of succulents, and air layering woody plants.",
        _s(
            "Why propagate",
            """Many popular houseplants root easily from a cutting, which makes propagation a free
            way to fill a windowsill, rescue a leggy plant, or share a favourite with friends.
            Spring and early summer are best, when plants are actively growing and light levels are
            high.""",
        ),
        _s(
            "Stem cuttings in water",
            """Pothos, philodendron, tradescantia and monstera root readily in a glass of water. Cut
            just below a node, the slightly swollen point where a leaf meets the stem and where new
            roots emerge. Each cutting needs at least one node; a monstera cutting also needs the
            thick aerial root that often grows beside it. Strip any leaves that would sit under
            water, change the water weekly, and pot the cutting into a light, airy mix once the new
            roots are five centimetres long.""",
        ),
        _s(
            "Leaf cuttings",
            """Succulents such as echeveria and jade can be grown from a single leaf. Twist the leaf
            off cleanly so that the base is intact, let it dry for a few days until the wound
            calluses, and lay it on barely damp gritty compost. A rosette of tiny leaves and pink
            roots appears within a few weeks. Snake plants can be propagated from sections of leaf
            pushed upright into soil, although variegated forms often lose their yellow edge when
            grown this way.""",
        ),
        _s(
            "Air layering",
            """Tall woody plants such as the fiddle-leaf fig and rubber plant can be air layered
            while still attached to the parent. Make a shallow upward cut below a node, dust it with
            rooting hormone, wrap it in damp sphagnum moss and seal the moss in clear plastic. When
            roots fill the moss, cut below them and pot the new plant.""",
        ),
    ),
    _doc(
        "docs/home/piano_tuning.txt",
        "How a Piano Is Tuned",
        "Tuning pins, equal temperament, counting beats, unisons and stretch tuning.",
        _s(
            None,
            """A modern piano has around 230 strings, most notes having two or three strings tuned
            in unison. Each string is wound around a tuning pin driven into a laminated wooden
            pinblock, and its tension is adjusted by turning the pin with a tuning lever, sometimes
            called a tuning hammer. The combined pull of all the strings exceeds 18 tonnes, which
            the cast-iron plate holds in check.""",
            """Tuning begins by setting a reference pitch, almost always the A above middle C at 440
            hertz, from a tuning fork or an electronic device. The tuner then sets a temperament
            octave in the middle of the keyboard. In equal temperament every semitone is the same
            size, which means that every interval except the octave is slightly out of tune by
            design. A tuner listens for beats, the slow pulsing heard when two nearly matching
            frequencies interfere, and counts them: a correctly tempered fifth beats slowly, about
            once a second in the middle register, while thirds beat much faster.""",
            """Rubber wedge mutes or a long felt strip silence the neighbouring strings of each
            unison while the first string is tuned, and then the remaining strings are brought into
            agreement with it until the beating disappears. Unisons that are even slightly off give
            the instrument a sour, honky-tonk sound.""",
            """Real strings are stiff, so their overtones are slightly sharp of the ideal harmonic
            series. This inharmonicity is greatest in the short bass strings and the thin strings of
            the top octave, and it is why pianos are stretch tuned: treble notes are set a little
            sharp and bass notes a little flat, so that octaves sound clean to the ear. A piano in a
            home with stable humidity should be tuned once or twice a year.""",
        ),
    ),
    # ----------------------------------------------------------------- history
    _doc(
        "docs/history/lighthouse_history.html",
        "Lighthouses of the Rocky Coast: A Short History",
        """How lighthouses evolved from open fires to Fresnel lenses and automated beacons, and
        what life was like for the keepers.""",
        _s(
            "From bonfires to lanterns",
            """For most of history, a light on the coast meant a fire. The Pharos of Alexandria,
            completed in the third century BC, was the most famous of the ancient towers, but
            medieval and early modern lights were usually coal fires in iron baskets or banks of
            candles behind glass. They were dim, smoky, and hard to tell apart from the lights of a
            town.""",
        ),
        _s(
            "The Fresnel lens",
            """The decisive improvement came in 1822, when the French physicist Augustin Fresnel
            demonstrated a lens built from concentric rings of glass prisms. It captured light that
            earlier reflectors wasted and bent it into a single horizontal beam visible more than
            twenty nautical miles out to sea. Lenses were graded by size into orders, from the
            enormous first-order lenses of major coastal lights, taller than a person, to small
            sixth-order lenses for harbour entrances. Rotating lens assemblies floated on baths of
            mercury so that a clockwork mechanism could turn several tonnes of glass smoothly.""",
        ),
        _s(
            "Telling one light from another",
            """Every lighthouse shows a distinct signature so that navigators can identify it on a
            chart: a characteristic pattern of flashes, occultations and colours, such as one white
            flash every ten seconds. By day, towers are recognised by their daymark, the painted
            pattern of bands, stripes or checks. A red tower with a white band, for example, is
            unmistakable on a grey headland.""",
        ),
        _s(
            "Keepers and automation",
            """Keepers trimmed wicks, polished brass and lenses, wound the clockwork every few hours
            through the night, and sounded the fog signal when visibility closed in. Many lived with
            their families on isolated rocks reached only by boat. Electrification and then
            automation gradually removed the need for them, and by the late twentieth century most
            lights were monitored remotely. Today many historic towers are maintained by volunteer
            societies and open as museums, while the navigation light itself is often a compact LED
            beacon.""",
        ),
    ),
    _doc(
        "docs/history/chess_openings.html",
        "A Beginner's Map of Chess Openings",
        """The ideas behind the most common chess openings, from the Ruy Lopez to the Sicilian
        Defence, and the principles that matter more than memorised moves.""",
        _s(
            "Principles first",
            """Opening theory fills entire libraries, but a few principles explain most of it.
            Control the centre with pawns and pieces, develop knights and bishops quickly, castle
            early to tuck the king away, and avoid moving the same piece twice without a good
            reason. Memorising long variations without understanding them tends to collapse as soon
            as an opponent deviates.""",
        ),
        _s(
            "Open games",
            """After 1.e4 e5, the Ruy Lopez, also called the Spanish Game, continues 2.Nf3 Nc6
            3.Bb5, putting indirect pressure on the e5 pawn by attacking its defender. It has been a
            mainstay of world championship play for well over a century. The Italian Game, 3.Bc4,
            aims the bishop at the weak f7 square and leads to quiet positional battles or, in the
            Evans Gambit, to sharp attacks.""",
        ),
        _s(
            "Semi-open defences",
            """Black does not have to answer 1.e4 symmetrically. The Sicilian Defence, 1...c5,
            fights for the centre from the side and creates unbalanced positions where both players
            have winning chances; the Najdorf and Dragon variations are among the most analysed
            lines in the game. The French Defence, 1...e6 followed by ...d5, builds a solid pawn
            chain at the cost of a sometimes passive light-squared bishop, while the Caro-Kann,
            1...c6, reaches a similar structure with the bishop developed outside the chain
            first.""",
        ),
        _s(
            "Closed games",
            """After 1.d4 d5, the Queen's Gambit offers a wing pawn with 2.c4 to pull Black's
            central pawn away. Accepting it is perfectly sound, since White cannot usually keep the
            extra pawn, but many players prefer to decline with 2...e6. Against 1.d4, hypermodern
            systems such as the King's Indian Defence let White build a big centre, then attack it
            with pawns and a fianchettoed bishop on g7.""",
        ),
    ),
    _doc(
        "docs/history/letterpress_printing.pdf",
        "Setting Type for Letterpress Printing",
        "Movable metal type, the type case, composing and justifying lines, lock-up and proofing.",
        _s(
            "Movable type",
            """Letterpress printing presses paper against raised, inked surfaces. In the tradition
            that grew from Gutenberg's workshop in the fifteenth century, each character is a
            separate piece of metal type cast from an alloy of lead, tin and antimony, chosen
            because it melts easily, fills the mould crisply and expands slightly as it cools.""",
        ),
        _s(
            "The type case",
            """Type is stored in shallow wooden cases divided into compartments. In the traditional
            pair of cases, capitals were kept in the upper case and small letters in the lower case,
            which is the origin of those terms. Compartments are sized by frequency of use, so that
            the compartment for e is the largest. A compositor learns the lay of the case by touch,
            much as a typist learns a keyboard.""",
        ),
        _s(
            "Composing a line",
            """The compositor holds a composing stick, an adjustable metal tray set to the width of
            the line, and picks letters one by one, placing them upside down and reading from left
            to right. Spaces between words are made with blank pieces of type, called quads and
            spaces, of various thicknesses. Because every line must be exactly the same width to
            lock up tightly, justification is done by hand, swapping thin and thick spaces until the
            line is snug.""",
        ),
        _s(
            "Leading and lock-up",
            """Thin strips of lead placed between lines add vertical space; the word leading,
            rhymed with sledding, survives in digital typography as the distance between baselines.
            When a page is complete, the type is slid onto a flat steel surface called the stone,
            surrounded by wooden furniture, and locked into an iron frame called a chase with
            expanding wedges known as quoins. A planer block tapped gently with a mallet pushes
            every letter down to the same height.""",
            new_page=True,
        ),
        _s(
            "Proofing and printing",
            """Proofs are pulled on a cylinder proof press, such as the Vandercook presses that many
            small studios still use, or on a platen press. The printer checks the proof for errors,
            including letters from the wrong font, which are themselves called wrong fonts, and
            turned letters, then makes corrections with tweezers before the run. Modern letterpress
            often uses photopolymer plates made from digital files, and many designers deliberately
            print with a firm impression so that the text is pressed visibly into soft cotton
            paper.""",
        ),
        _s(
            "Distribution",
            """After printing, the type is cleaned and distributed back into the case letter by
            letter, ready for the next job. Careless distribution leads to a pied case, full of
            misplaced sorts, which is why apprentices were taught to sort type with great care.""",
        ),
        author="Demo Print Shop",
    ),
    # ------------------------------------------------------ long document (root)
    _doc(
        "docs/municipal_water_treatment.md",
        "From River to Tap: How a Municipal Water System Works",
        """A guide to drinking water treatment, from source water and coagulation through
        filtration, disinfection, distribution and testing, to what residents should do during a
        boil-water notice.""",
        _s(
            "Introduction",
            """Turning a river, lake or aquifer into water that is safe to drink straight from the
            tap is one of the great public health achievements of the last two centuries. Before
            filtration and disinfection became routine, cholera and typhoid regularly swept through
            growing cities. Today a typical treatment plant runs quietly around the clock, and most
            residents think about it only when something goes wrong. This guide follows a drop of
            water from its source to the kitchen tap and explains what the utility does at each
            step, what the regular tests look for, and what you should do when the system is
            disrupted.""",
        ),
        _s(
            "Source water and intake",
            """Surface water from rivers and reservoirs carries silt, algae, leaves and
            microorganisms, and its quality changes with the seasons. After a storm, turbidity, the
            cloudiness caused by suspended particles, can rise tenfold within hours. Groundwater
            pumped from wells is usually clearer and more stable, but it may carry dissolved iron,
            manganese or hardness minerals picked up from the rock.""",
            """Intakes are screened to keep out fish and debris, and many utilities draw from
            several depths in a reservoir so that operators can avoid layers of warm, algae-rich
            water in late summer. Source water protection, which means controlling what farms,
            roads and factories upstream release into the catchment, is the cheapest treatment of
            all, because every contaminant kept out of the river is one the plant does not have to
            remove.""",
        ),
        _s(
            "Coagulation and flocculation",
            """Many of the particles in raw water are too small to settle on their own, and they
            carry a slight negative charge that keeps them apart. The first chemical step is
            coagulation: a coagulant such as aluminium sulfate, commonly called alum, or ferric
            chloride is dosed into the water and mixed violently for less than a minute. The
            positively charged metal ions neutralise the particles and begin to bind them
            together.""",
            """In the flocculation basins that follow, slow paddles stir the water for twenty to
            forty minutes. The gentle motion brings the destabilised particles into contact so that
            they grow into visible, fluffy clumps called floc. Operators adjust the coagulant dose
            several times a day using jar tests, small bench-top trials that mimic the plant with
            different doses and show which produces the best floc.""",
        ),
        _s(
            "Sedimentation",
            """The flocculated water then flows slowly through large sedimentation basins, where
            most of the floc settles to the bottom as sludge. Some plants use inclined plates or
            tubes to increase the settling area in a smaller footprint, and others use dissolved air
            flotation, in which tiny bubbles lift light algae floc to the surface to be skimmed off.
            The sludge is thickened, dewatered and usually sent to a landfill or spread on farmland
            where regulations allow.""",
        ),
        _s(
            "Filtration",
            """Even well-settled water still contains fine particles and many microorganisms, so it
            passes through filters. The classic rapid gravity filter is a bed of sand, often capped
            with a layer of anthracite coal, about a metre deep. Particles stick to the grains as
            the water trickles down. As the filter clogs, the head loss across it rises, and every
            day or two it is cleaned by backwashing: water and air are pumped upward through the bed
            to scrub the grains and carry the trapped material to waste.""",
            """Filtration is especially important for protozoan parasites such as Cryptosporidium,
            whose tough oocysts resist chlorine. Some utilities add membrane filtration or
            ultraviolet reactors specifically as a barrier against these organisms. Granular
            activated carbon filters may also be used to adsorb compounds that cause earthy or musty
            tastes and odours, which are often produced by algae in late summer.""",
        ),
        _s(
            "Disinfection and corrosion control",
            """Disinfection kills or inactivates the bacteria and viruses that survive filtration.
            Chlorine remains the most widely used disinfectant because it is effective, inexpensive,
            and leaves a residual that continues to protect the water in the pipes. Operators design
            for a target contact time, expressed as the concentration of chlorine multiplied by the
            minutes of exposure, in a baffled clear well that forces the water to follow a long path
            before it leaves the plant.""",
            """Many systems convert free chlorine to chloramine for distribution by adding a small
            amount of ammonia. Chloramine is a weaker disinfectant but lasts longer in large
            networks and forms fewer disinfection by-products, the compounds created when chlorine
            reacts with natural organic matter. Ozone and ultraviolet light are powerful primary
            disinfectants, but neither leaves a residual, so they are always paired with chlorine or
            chloramine.""",
            """Before the water leaves the plant, its chemistry is adjusted for the pipes it will
            travel through. Raising the pH slightly and dosing a corrosion inhibitor such as
            orthophosphate builds a protective scale on the inside of old pipes. In cities where
            lead service lines remain, this step is critical, because corrosive water can dissolve
            lead from the pipes into the tap.""",
        ),
        _s(
            "Storage and distribution",
            """Treated water is pumped into a network of mains, storage tanks and water towers.
            Elevated storage does two jobs: it supplies peak demand in the morning and evening
            without oversizing the pumps, and it keeps the network pressurised, which prevents
            contaminated groundwater from seeping into pipes through small leaks. Utilities flush
            hydrants periodically to remove sediment and to refresh water in dead-end mains, where
            it can sit for days and lose its disinfectant residual.""",
            """Backflow preventers are installed where a customer's plumbing could push water back
            into the public system, such as irrigation systems, boilers and fire sprinklers. A
            sudden pressure drop, for instance during a main break or heavy firefighting, could
            otherwise siphon dirty water from a garden hose left in a bucket into the drinking
            water.""",
        ),
        _s(
            "Testing and reporting",
            """Water quality is tested continuously at the plant by online analysers for turbidity,
            chlorine residual and pH, and samples are collected throughout the distribution system
            every week for laboratory analysis. Coliform bacteria are the key indicator: they are
            not usually harmful themselves, but their presence suggests that the treatment barrier
            or the pipes have been breached. Utilities also test for metals, nitrates, disinfection
            by-products and a long list of other regulated contaminants on fixed schedules. Many
            publish an annual consumer confidence report that lists the results, and customers can
            usually request a free lead test for their own tap.""",
        ),
        _s(
            "Taste, odour and hardness",
            """Most complaints that reach a utility are about taste and appearance rather than
            safety. A faint swimming-pool smell comes from the chlorine residual and fades if a jug
            of water is left uncovered in the refrigerator for a few hours. Earthy or musty tastes in
            late summer usually come from geosmin, a harmless compound released by algae in the
            reservoir. Brown or yellow water after nearby roadworks or hydrant flushing is stirred-up
            iron sediment; running the cold tap until it clears normally solves it.""",
            """Hard water, rich in dissolved calcium and magnesium, is not a health concern, but it
            leaves white scale in kettles and on shower heads and makes soap lather poorly. Utilities
            drawing on chalk or limestone aquifers sometimes soften water centrally; elsewhere,
            households that mind the scale install their own softeners.""",
        ),
        _s(
            "Paying for the system",
            """Water bills cover far more than the water itself. Most of the cost of a utility lies
            in pipes, pumps, tanks and treatment plants, many of which were built generations ago
            and are reaching the end of their lives. Replacing old cast-iron mains, finding leaks with
            acoustic loggers, and keeping spare capacity for droughts all compete for the same
            budget, which is why rate increases are often tied to long-term capital plans published
            for public comment.""",
        ),
        _s(
            "When a boil-water notice is issued",
            """A boil-water notice, also called a boil-water advisory, is issued when the utility
            cannot be sure that the water in part of the system is free of disease-causing
            organisms. Common triggers include a positive test for E. coli, a main break that lets
            pressure fall close to zero, a failure at the treatment plant, or flooding of a well.
            Sometimes the notice is precautionary, issued before any contamination has been
            confirmed, because the results of bacterial tests take at least a day to arrive.""",
            """While a notice is in effect, bring tap water to a full rolling boil for one minute
            before drinking it, or for three minutes at elevations above about 2,000 metres, and let
            it cool before use. Use boiled or bottled water for drinking, brushing teeth, making
            ice, preparing baby formula, and washing fruit and vegetables that will be eaten raw.
            Discard ice made since the problem began. Showering and bathing are generally fine for
            adults, but avoid swallowing water, and give babies and young children a sponge bath.
            Dishwashers that reach a high final rinse temperature or use a sanitising cycle are
            usually safe; otherwise wash dishes by hand and rinse them in water to which a small
            amount of unscented household bleach has been added.""",
            """Household water filters, including pitcher filters and most refrigerator filters, do
            not reliably remove bacteria and viruses and are no substitute for boiling. The same is
            true of water softeners.""",
            """When the utility lifts the notice, flush your plumbing: run each cold water tap for
            several minutes, starting with the tap nearest the point where the water enters the
            building, empty and refill ice makers, and run the water heater through a cycle if it
            was left unused. Replace any filter cartridges that were in use during the event. If you
            are unsure whether your address was affected, check the utility's website or call its
            customer service line rather than relying on posts on social media.""",
        ),
    ),
    # ------------------------------------------------------------------- notes
    _doc(
        "notes/garden_committee_2024-03-12.txt",
        "Community Garden Committee: Meeting Notes, 12 March 2024",
        "Minutes of the March committee meeting of the Eastside community garden.",
        _s(
            None,
            """Present: Mara (chair), Tobias, Ines, Kwame, Dolores. Apologies: Feng. The meeting
            opened at 7.05 pm in the library annex.""",
            """Plot waiting list. Fourteen names are on the list, the longest it has been. Two plots
            in the north bed were abandoned last autumn and will be offered to the first two names.
            Ines will write to plot holders who did not pay the annual fee by the end of
            February.""",
            """Rain barrel rebate. The city water department is offering a rebate of up to 60
            dollars per rain barrel, with a limit of two barrels per address. The application
            deadline is 30 April and receipts must be dated this year. Kwame will apply on behalf of
            the garden for two barrels at the tool shed and will post the form on the noticeboard
            for members who want barrels at home.""",
            """Tool shed. The padlock will be replaced with a combination lock; the new code will
            be sent by text message, not posted. Tobias reported that the wheelbarrow tyre is flat
            again and offered to replace the inner tube.""",
            """Compost bays. The middle bay has rotted through at the back. Dolores will price
            untreated larch boards. Until then, members are asked not to add woody prunings.""",
            """Spring work day set for Saturday 6 April, 10 am to 2 pm, followed by the seed swap.
            Next meeting 9 April. Meeting closed at 8.20 pm.""",
        ),
    ),
    _doc(
        "notes/reading_list.txt",
        "Reading List for the Year",
        "A personal reading list with short notes on why each book is on it.",
        _s(
            None,
            """These are the books I want to finish this year, in no particular order. Titles are
            as I remember them from a friend's recommendations; I still need to look up a few
            authors.""",
            (
                "The Salt Road, a travel memoir about walking an old trading route across a desert plateau. Recommended for the chapters on caravan camels and well digging.",
                "A Short Atlas of Clouds, a small illustrated book that names cloud types and explains what each one says about the coming weather.",
                "Letters from the Night Shift, a collection of essays by a hospital porter. Apparently very funny and quite sad in places.",
                "The Patient Gardener, about planting for the next owner of a garden rather than for yourself: trees, hedges and soil.",
                "Counting Sheep, a history of wool and the towns that grew rich from it, lent to me by my aunt.",
            ),
            """Rule for this year: no more than two books on the go at once, and if a book has not
            caught me by page fifty it goes back to the library without guilt. I will add notes
            here as I finish each one, with a line about whether I would give it away or keep
            it.""",
        ),
    ),
    _doc(
        "notes/camping_packing_list.txt",
        "Packing List: October Coastal Camping Weekend",
        "What to pack for a two-night autumn camping trip on the coast.",
        _s(
            None,
            """Two nights at the headland campsite, arriving Friday evening. Forecast is cold at
            night with wind off the sea, so pack for damp and chilly rather than for rain.""",
            (
                "Shelter: tent with the storm guy lines, extra pegs for sandy ground, a footprint groundsheet.",
                "Sleeping: three-season bag, insulated mat, a wool hat to sleep in.",
                "Kitchen: gas stove and two canisters, windshield, one pot, lighter and matches, mugs, porridge oats, pasta, dried soup, coffee.",
                "Clothing: waterproof shell, fleece, thermal base layer, two pairs of wool socks, spare gloves.",
                "Light: headlamp with fresh batteries and a small lantern for the tent.",
                "Other: first aid kit, tide times written down, paper map of the coast path, power bank, rubbish bags.",
            ),
            """Leave the big cool box at home; the nights are cold enough. Check the campsite rules
            on fires before buying firewood, because last year open fires were banned after a dry
            summer. Remember to leave the key for the neighbours who are feeding the cat.""",
        ),
    ),
)


# ---------------------------------------------------------------------------------------
# Document renderers
# ---------------------------------------------------------------------------------------


def _render_markdown(doc: _Doc) -> str:
    out = [f"# {doc.title}", "", f"_{doc.description}_", ""]
    for sec in doc.sections:
        if sec.heading:
            out += [f"## {sec.heading}", ""]
        for p in sec.paragraphs:
            if isinstance(p, tuple):
                out += [f"- {item}" for item in p]
            else:
                out.append(p)
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _render_text(doc: _Doc) -> str:
    out = [doc.title, "=" * len(doc.title), ""]
    for sec in doc.sections:
        if sec.heading:
            out += [sec.heading, "-" * len(sec.heading), ""]
        for p in sec.paragraphs:
            if isinstance(p, tuple):
                for item in p:
                    out.append(textwrap.fill(item, width=78, initial_indent="  * ", subsequent_indent="    "))
            else:
                out.append(textwrap.fill(p, width=78))
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _render_html(doc: _Doc) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{e(doc.title)}</title>",
        f'<meta name="description" content="{e(doc.description)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<style>body { font-family: Georgia, serif; max-width: 42em; margin: 2em auto; }</style>",
        "<script>",
        "  // Analytics stub: none of this is content and none of it may be indexed.",
        "  window.dataLayer = window.dataLayer || [];",
        f'  function track(name) {{ window.dataLayer.push({{event: name, tag: "{HTML_SCRIPT_SENTINEL}"}}); }}',
        "</script>",
        "</head>",
        "<body>",
        '<nav><a href="index.html">Home</a> | <a href="topics.html">Topics</a></nav>',
        "<article>",
        f"<h1>{e(doc.title)}</h1>",
    ]
    for sec in doc.sections:
        if sec.heading:
            out.append(f"<h2>{e(sec.heading)}</h2>")
        for p in sec.paragraphs:
            if isinstance(p, tuple):
                out.append("<ul>")
                out += [f"  <li>{e(item)}</li>" for item in p]
                out.append("</ul>")
            else:
                out.append(f"<p>{e(p)}</p>")
    out += [
        "</article>",
        f'<script>track("pageview"); console.log("{HTML_SCRIPT_SENTINEL} loaded");</script>',
        "</body>",
        "</html>",
    ]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- PDF


_PDF_DATE = "D:20240115090000Z"
_PAGE_W, _PAGE_H = 612, 792
_MARGIN = 72
_WRAP = 84  # characters per body line at 11 pt Helvetica in a 468 pt column


def _pdf_string(text: str) -> str:
    if not text.isascii():
        raise ValueError(f"PDF text must be ASCII: {text!r}")
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def _pdf_pages(doc: _Doc) -> list[list[tuple[str, int, float, str]]]:
    """Lay out a document as pages of (font, size, y, text) lines."""
    pages: list[list[tuple[str, int, float, str]]] = []
    page: list[tuple[str, int, float, str]] = []
    y = float(_PAGE_H - _MARGIN)

    def emit(font: str, size: int, text: str, advance: float) -> None:
        nonlocal y
        if y - advance < _MARGIN:
            raise ValueError(f"{doc.path}: page {len(pages) + 1} overflows; add a page break")
        y -= advance
        page.append((font, size, y, text))

    emit("F2", 18, doc.title, 18)
    y -= 12
    for i, sec in enumerate(doc.sections):
        if sec.new_page and i > 0:
            pages.append(page)
            page = []
            y = float(_PAGE_H - _MARGIN)
        if sec.heading:
            y -= 6
            emit("F2", 13, sec.heading, 18)
            y -= 2
        for p in sec.paragraphs:
            items = [f"- {item}" for item in p] if isinstance(p, tuple) else [p]
            for item in items:
                for line in textwrap.wrap(item, width=_WRAP):
                    emit("F1", 11, line, 14)
            y -= 8
    pages.append(page)
    return pages


def _pdf_bytes(doc: _Doc) -> bytes:
    """A minimal, valid PDF 1.4: Type1 Helvetica fonts, one content stream per page,
    a correct xref table and an /Info dictionary."""
    pages = _pdf_pages(doc)
    n_pages = len(pages)
    # Object numbers: 1 catalog, 2 pages, 3 F1, 4 F2, 5 info, then (page, content) pairs.
    page_ids = [6 + 2 * i for i in range(n_pages)]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: (
            "<< /Type /Pages /Kids [" + " ".join(f"{p} 0 R" for p in page_ids) + f"] /Count {n_pages} >>"
        ).encode("ascii"),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        4: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        5: (
            f"<< /Title {_pdf_string(doc.title)} /Author {_pdf_string(doc.author)}"
            f" /Subject {_pdf_string(doc.description)} /Creator (rag_pipeline demo_corpus)"
            f" /Producer (rag_pipeline demo_corpus) /CreationDate ({_PDF_DATE}) /ModDate ({_PDF_DATE}) >>"
        ).encode("ascii"),
    }
    for page_id, lines in zip(page_ids, pages):
        content = "".join(
            f"BT /{font} {size} Tf {_MARGIN} {y:.0f} Td {_pdf_string(text)} Tj ET\n" for font, size, y, text in lines
        ).encode("ascii")
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_PAGE_W} {_PAGE_H}]"
            f" /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {page_id + 1} 0 R >>"
        ).encode("ascii")
        objects[page_id + 1] = b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objects) + 1
    out += b"xref\n0 %d\n" % size
    out += b"0000000000 65535 f \n"
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num]
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref_at)
    return bytes(out)


def _render(doc: _Doc) -> bytes:
    suffix = Path(doc.path).suffix
    if suffix == ".md":
        return _render_markdown(doc).encode("utf-8")
    if suffix == ".txt":
        return _render_text(doc).encode("utf-8")
    if suffix == ".html":
        return _render_html(doc).encode("utf-8")
    if suffix == ".pdf":
        return _pdf_bytes(doc)
    raise ValueError(f"unknown document format: {doc.path}")


def _word_count(doc: _Doc) -> int:
    words = len(doc.title.split())
    for sec in doc.sections:
        words += len((sec.heading or "").split())
        for p in sec.paragraphs:
            for item in p if isinstance(p, tuple) else (p,):
                words += len(item.split())
    return words


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------

RGB = tuple[int, int, int]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _vgradient(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], top: RGB, bottom: RGB) -> None:
    x0, y0, x1, y1 = box
    span = max(1, y1 - y0 - 1)
    for y in range(y0, y1):
        t = (y - y0) / span
        color = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom))
        draw.line([(x0, y), (x1 - 1, y)], fill=color)


def _text_centered(draw: ImageDraw.ImageDraw, cx: int, cy: int, text: str, size: int, max_width: int, fill: RGB) -> None:
    """Large, high-contrast text (for OCR), shrunk until it fits max_width."""
    while True:
        font = _font(size)
        left, _, right, _ = draw.textbbox((0, 0), text, font=font)
        if right - left <= max_width or size <= 16:
            break
        size -= 2
    draw.text((cx, cy), text, font=font, fill=fill, anchor="mm")


def _draw_lighthouse(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, 300), (58, 40, 110), (250, 145, 75))
    _vgradient(d, (0, 300, w, h), (60, 60, 100), (20, 25, 50))
    for _ in range(40):  # first stars
        x, y = rng.randrange(w), rng.randrange(110)
        d.point((x, y), fill=(255, 250, 230))
    d.ellipse((440, 262, 500, 322), fill=(255, 205, 120))
    _vgradient(d, (0, 300, w, 302), (250, 170, 100), (250, 170, 100))
    for _ in range(60):  # sparkle on the sea
        x, y = rng.randrange(w), rng.randrange(305, h)
        d.line([(x, y), (x + rng.randrange(4, 14), y)], fill=(110, 100, 140))
    # rocks
    d.polygon([(0, h), (0, 330), (70, 306), (160, 298), (255, 318), (330, 356), (372, h)], fill=(56, 50, 56))
    d.polygon([(240, h), (300, 380), (380, 392), (450, h)], fill=(40, 36, 42))
    # red tower with a white band
    d.polygon([(168, 308), (252, 308), (236, 150), (184, 150)], fill=(198, 30, 36))
    d.polygon([(177, 222), (243, 222), (240, 196), (180, 196)], fill=(245, 245, 240))
    d.rectangle((176, 140, 244, 150), fill=(40, 30, 30))
    d.rectangle((190, 104, 230, 140), fill=(255, 232, 140))
    d.polygon([(184, 104), (236, 104), (210, 78)], fill=(70, 20, 20))
    # beam of light
    overlay = Image.new("RGBA", im.size, (0, 0, 0, 0))
    ImageDraw.Draw(overlay).polygon([(230, 122), (w, 60), (w, 180)], fill=(255, 240, 180, 90))
    im.paste(Image.alpha_composite(im.convert("RGBA"), overlay).convert("RGB"))


def _draw_sourdough(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (236, 230, 220), (210, 200, 186))
    d.rounded_rectangle((50, 230, w - 50, 420), radius=18, fill=(150, 100, 55))
    for _ in range(24):  # wood grain
        y = rng.randrange(240, 412)
        d.line([(60, y), (w - 60, y + rng.randrange(-4, 5))], fill=(128, 84, 44), width=2)
    d.ellipse((150, 120, 450, 340), fill=(176, 110, 50))
    d.ellipse((172, 134, 428, 306), fill=(205, 145, 78))
    for box in ((190, 150, 410, 330), (210, 140, 390, 300)):
        d.arc(box, start=205, end=335, fill=(242, 224, 186), width=7)
    for _ in range(260):  # flour
        x, y = rng.randrange(180, 420), rng.randrange(135, 300)
        if ((x - 300) / 128) ** 2 + ((y - 220) / 86) ** 2 < 1:
            d.point((x, y), fill=(250, 246, 236))


def _draw_beehive(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, 270), (120, 175, 230), (200, 225, 245))
    _vgradient(d, (0, 270, w, h), (110, 170, 70), (60, 120, 40))
    for _ in range(220):  # wildflowers
        x, y = rng.randrange(w), rng.randrange(280, h)
        r = rng.randrange(2, 5)
        d.ellipse((x - r, y - r, x + r, y + r), fill=(250, 215, 40))
    d.rectangle((240, 420, 400, 440), fill=(110, 75, 40))  # stand
    for box in ((230, 330, 410, 420), (230, 252, 410, 330), (236, 196, 404, 252)):
        d.rectangle(box, fill=(246, 242, 228), outline=(150, 140, 120), width=2)
        x0, y0, x1, y1 = box
        d.rectangle(((x0 + x1) // 2 - 24, (y0 + y1) // 2 - 5, (x0 + x1) // 2 + 24, (y0 + y1) // 2 + 5), fill=(120, 110, 95))
    d.rectangle((222, 178, 418, 196), fill=(120, 125, 130))  # roof
    d.rectangle((290, 408, 350, 416), fill=(30, 25, 20))  # entrance
    for _ in range(30):  # bees
        x, y = rng.randrange(200, 460), rng.randrange(150, 420)
        d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(40, 30, 10))


def _draw_solar_roof(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (70, 140, 220), (180, 215, 245))

    def eave(x: float) -> float:
        return 230 - 0.125 * x

    d.polygon([(0, h), (0, eave(0)), (w, eave(w)), (w, h)], fill=(84, 90, 100))
    for _ in range(80):  # slate joints
        x, y = rng.randrange(w), rng.randrange(240, h)
        d.line([(x, y), (x + 30, y - 4)], fill=(70, 75, 84))
    for col in range(6):
        for row in range(2):
            x0 = 60 + col * 115
            x1 = x0 + 105
            top0, top1 = eave(x0) + 30 + row * 100, eave(x1) + 30 + row * 100
            d.polygon([(x0, top0), (x1, top1), (x1, top1 + 90), (x0, top0 + 90)], fill=(22, 36, 92), outline=(190, 195, 205))
            for k in range(1, 6):  # cell grid
                x = x0 + k * (x1 - x0) / 6
                y = top0 + (top1 - top0) * k / 6
                d.line([(x, y), (x, y + 90)], fill=(52, 72, 140))
            for k in range(1, 3):
                d.line([(x0, top0 + 30 * k), (x1, top1 + 30 * k)], fill=(52, 72, 140))


def _draw_harbor_sign(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, 200), (90, 150, 200), (40, 100, 150))
    _vgradient(d, (0, 200, w, h), (120, 118, 112), (90, 88, 84))
    for _ in range(50):  # stone wall texture
        x, y = rng.randrange(w), rng.randrange(205, h)
        d.rectangle((x, y, x + 40, y + 16), outline=(80, 78, 74))
    d.rectangle((40, 40, w - 40, h - 40), fill=(248, 244, 230), outline=(70, 40, 20), width=12)
    _text_centered(d, w // 2, 120, "HARBOR MARKET", 64, w - 120, (0, 0, 0))
    _text_centered(d, w // 2, 205, "OPEN SUNDAY", 64, w - 120, (0, 0, 0))
    _text_centered(d, w // 2, 285, "8 AM - 1 PM", 44, w - 120, (0, 0, 0))


def _draw_bike_poster(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, w, h), fill=(176, 136, 88))
    for _ in range(900):  # cork board
        x, y = rng.randrange(w), rng.randrange(h)
        d.point((x, y), fill=(140, 100, 60))
    d.rectangle((40, 40, w - 40, h - 40), fill=(255, 255, 255))
    _text_centered(d, w // 2, 120, "BIKE REPAIR", 56, w - 110, (0, 0, 0))
    _text_centered(d, w // 2, 190, "CLINIC", 56, w - 110, (0, 0, 0))
    _text_centered(d, w // 2, 270, "SATURDAY 10 AM", 40, w - 110, (180, 0, 0))
    # a simple bicycle
    d.ellipse((90, 380, 210, 500), outline=(0, 0, 0), width=6)
    d.ellipse((270, 380, 390, 500), outline=(0, 0, 0), width=6)
    d.line([(150, 440), (215, 380), (300, 380), (330, 440), (240, 440), (150, 440)], fill=(0, 0, 0), width=6)
    d.line([(240, 440), (215, 380)], fill=(0, 0, 0), width=6)
    d.line([(300, 380), (295, 355), (320, 350)], fill=(0, 0, 0), width=6)
    d.line([(205, 370), (230, 370)], fill=(0, 0, 0), width=8)


def _draw_trail_sign(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (40, 90, 50), (20, 50, 25))
    for _ in range(26):  # tree trunks
        x = rng.randrange(w)
        d.rectangle((x, 0, x + rng.randrange(10, 28), h), fill=(70, 50, 30))
    d.rectangle((300, 320, 340, h), fill=(110, 80, 45))  # post
    d.rectangle((80, 90, w - 80, 340), fill=(250, 215, 0), outline=(0, 0, 0), width=10)
    _text_centered(d, w // 2, 170, "TRAIL CLOSED", 60, w - 200, (0, 0, 0))
    _text_centered(d, w // 2, 260, "ROCKFALL", 60, w - 200, (0, 0, 0))


def _star(cx: float, cy: float, outer: float, inner: float, rotation: float = -90.0) -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        r = outer if k % 2 == 0 else inner
        a = math.radians(rotation + k * 36)
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def _draw_tide_pool(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, w, h), fill=(110, 104, 98))
    for _ in range(120):  # rock texture
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randrange(6, 30)
        shade = rng.randrange(80, 130)
        d.ellipse((x - r, y - r, x + r, y + r), fill=(shade, shade - 4, shade - 8))
    d.ellipse((70, 80, 570, 420), fill=(36, 108, 118))
    d.ellipse((120, 110, 520, 390), fill=(44, 124, 132))
    for cx, cy in ((170, 180), (470, 300), (420, 150), (200, 330)):  # anemones
        for k in range(16):
            a = 2 * math.pi * k / 16
            d.line([(cx, cy), (cx + 34 * math.cos(a), cy + 34 * math.sin(a))], fill=(70, 170, 95), width=4)
        d.ellipse((cx - 16, cy - 16, cx + 16, cy + 16), fill=(50, 140, 80))
    d.polygon(_star(310, 245, 86, 34), fill=(236, 110, 30))
    for _ in range(70):  # texture on the sea star
        x, y = rng.randrange(250, 370), rng.randrange(180, 310)
        d.point((x, y), fill=(250, 170, 90))


def _draw_volcano(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (150, 190, 230), (225, 235, 245))
    d.polygon([(40, h), (310, 160), (420, 160), (690, h)], fill=(92, 80, 74))
    d.polygon(
        [(310, 160), (420, 160), (470, 225), (440, 214), (410, 236), (372, 208), (332, 234), (296, 214), (258, 224)],
        fill=(248, 248, 250),
    )
    for i in range(70):  # ash plume drifting right
        t = i / 70
        cx = 365 + t * 260 + rng.randrange(-20, 20)
        cy = 150 - t * 130 + rng.randrange(-15, 15)
        r = 18 + t * 45 + rng.randrange(0, 10)
        g = rng.randrange(95, 140)
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(g, g, g + 4))
    _vgradient(d, (0, h - 40, w, h), (70, 90, 60), (50, 70, 45))


def _draw_coffee(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, w, h), fill=(38, 38, 42))
    d.rounded_rectangle((30, 30, w - 30, h - 30), radius=20, fill=(172, 174, 178))
    for x in range(50, w - 40, 14):  # perforations
        for y in range(50, h - 40, 14):
            d.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(140, 142, 146))
    for _ in range(170):  # beans
        cx, cy = rng.randrange(60, w - 60), rng.randrange(60, h - 60)
        bw, bh = rng.choice(((26, 18), (18, 26), (24, 20)))
        tone = rng.randrange(-15, 15)
        d.ellipse((cx - bw // 2, cy - bh // 2, cx + bw // 2, cy + bh // 2), fill=(92 + tone, 54 + tone // 2, 30))
        if bw > bh:
            d.line([(cx - bw // 2 + 4, cy), (cx + bw // 2 - 4, cy)], fill=(48, 26, 14), width=2)
        else:
            d.line([(cx, cy - bh // 2 + 4), (cx, cy + bh // 2 - 4)], fill=(48, 26, 14), width=2)


def _draw_heron(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, 300), (205, 214, 220), (230, 232, 228))
    _vgradient(d, (0, 300, w, h), (130, 150, 160), (90, 110, 120))
    for _ in range(160):  # reeds
        x = rng.randrange(w)
        top = rng.randrange(180, 330)
        d.line([(x, h), (x + rng.randrange(-12, 12), top)], fill=(120 + rng.randrange(40), 120 + rng.randrange(30), 50), width=2)
    d.line([(322, 255), (318, 345)], fill=(60, 55, 40), width=4)  # legs
    d.line([(338, 255), (342, 345)], fill=(60, 55, 40), width=4)
    d.ellipse((280, 195, 385, 262), fill=(142, 146, 152))
    d.polygon([(360, 205), (420, 230), (372, 245)], fill=(110, 114, 120))  # tail feathers
    d.line([(300, 215), (288, 150)], fill=(160, 164, 170), width=12)  # neck
    d.ellipse((272, 132, 306, 158), fill=(225, 228, 230))
    d.line([(278, 140), (300, 138)], fill=(20, 20, 20), width=3)  # black crest stripe
    d.polygon([(274, 142), (232, 150), (274, 152)], fill=(225, 190, 60))  # beak


def _draw_yarn(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (196, 156, 112), (160, 120, 82))
    for ball, base, line in (((110, 110, 300, 300), (52, 92, 172), (92, 132, 210)), ((280, 170, 440, 330), (236, 226, 202), (205, 192, 165))):
        d.ellipse(ball, fill=base)
        x0, y0, x1, y1 = ball
        for k in range(9):
            off = rng.randrange(-30, 30)
            d.arc((x0 + 10 + off // 3, y0 + 8 * k, x1 - 10 + off // 3, y1 - 8 * k), start=200 + off, end=340 + off, fill=line, width=3)
    d.line([(60, 380), (500, 250)], fill=(214, 182, 120), width=7)
    d.line([(70, 395), (510, 275)], fill=(214, 182, 120), width=7)
    d.ellipse((490, 240, 512, 262), fill=(120, 90, 50))
    d.ellipse((500, 265, 522, 287), fill=(120, 90, 50))


def _draw_chessboard(im: Image.Image, rng: random.Random) -> None:
    w, _ = im.size
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, w, w), fill=(100, 62, 35))
    sq, origin = 55, 20
    for r in range(8):
        for c in range(8):
            color = (240, 217, 181) if (r + c) % 2 == 0 else (181, 136, 99)
            x, y = origin + c * sq, origin + r * sq
            d.rectangle((x, y, x + sq - 1, y + sq - 1), fill=color)
            if r in (0, 1, 6, 7):
                fill = (25, 25, 25) if r < 2 else (250, 250, 245)
                outline = (200, 200, 200) if r < 2 else (40, 40, 40)
                rad = 20 if r in (0, 7) else 14
                cx, cy = x + sq // 2, y + sq // 2
                d.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), fill=fill, outline=outline, width=2)


def _draw_abstract(im: Image.Image, rng: random.Random) -> None:
    w, h = im.size
    d = ImageDraw.Draw(im)
    _vgradient(d, (0, 0, w, h), (255, 120, 90), (60, 40, 160))
    for _ in range(12):
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randrange(10, 60)
        d.ellipse((x - r, y - r, x + r, y + r), outline=(255, 255, 255), width=2)


@dataclass(frozen=True)
class _ImageSpec:
    path: str
    size: tuple[int, int]
    draw: Callable[[Image.Image, random.Random], None]
    seed: int
    description: str | None = None
    keywords: tuple[str, ...] = ()
    title: str | None = None
    exif_text: bool = False  # write description + keywords as EXIF ImageDescription / XPKeywords
    xmp: bool = False  # write an XMP packet with dc:title, dc:description, dc:subject
    sidecar: Literal["txt", "json"] | None = None  # description goes to <name>.txt or <name>.json
    taken: str | None = None  # EXIF DateTimeOriginal, "YYYY:MM:DD HH:MM:SS"
    camera: tuple[str, str] | None = None  # EXIF Make, Model
    text: tuple[str, ...] = field(default=())  # words rendered into the picture (for OCR)


_CAMERA = ("DemoOptics", "FieldCam 24")
_PHONE = ("Acme Mobile", "Pocket 7")

_IMAGES: tuple[_ImageSpec, ...] = (
    _ImageSpec(
        "images/lighthouse_dusk.jpg", (640, 480), _draw_lighthouse, 101,
        description="A red lighthouse with a white band on a rocky coast at dusk, its lamp lit against an orange and purple sky.",
        keywords=("lighthouse", "coast", "dusk", "rocks", "sea"),
        title="Lighthouse at dusk", exif_text=True, xmp=True,
        taken="2023:09:21 19:12:44", camera=_CAMERA,
    ),
    _ImageSpec(
        "images/sourdough_loaf.jpg", (600, 450), _draw_sourdough, 102,
        description="A round sourdough loaf with a scored, flour-dusted crust cooling on a wooden cutting board.",
        keywords=("bread", "sourdough", "loaf", "baking", "kitchen"),
        title="Sourdough loaf", exif_text=True,
        taken="2023:11:04 10:30:00", camera=_PHONE,
    ),
    _ImageSpec(
        "images/beehive_meadow.png", (640, 480), _draw_beehive, 103,
        description="Three stacked white beehive boxes standing in a summer meadow full of yellow wildflowers.",
        keywords=("beehive", "bees", "meadow", "apiary", "wildflowers"),
        title="Hive in the meadow", exif_text=True, xmp=True,
        taken="2023:07:02 11:15:20", camera=_CAMERA,
    ),
    _ImageSpec(
        "images/solar_roof.jpg", (800, 500), _draw_solar_roof, 104,
        description="Rows of dark blue solar panels mounted on a grey slate roof under a clear sky.",
        keywords=("solar panels", "roof", "photovoltaic", "renewable energy"),
        title="Rooftop solar array", exif_text=True, xmp=True,
        taken="2024:04:18 13:05:00", camera=_PHONE,
    ),
    _ImageSpec(
        "images/harbor_market_sign.png", (640, 400), _draw_harbor_sign, 105,
        # The metadata names the market; the answer (the day, the hours) is only in the
        # rendered text, so OCR makes this image a better hit.
        description="A painted signboard for the harbor market, propped against a stone quay wall.",
        keywords=("signboard", "market", "quay"),
        title="Signboard on the quay", xmp=True,
        text=("HARBOR MARKET", "OPEN SUNDAY", "8 AM - 1 PM"),
    ),
    _ImageSpec(
        "images/bike_clinic_poster.png", (480, 640), _draw_bike_poster, 106,
        description="A poster for a community bicycle workshop pinned to a cork noticeboard.",
        keywords=("poster", "bicycle", "workshop", "noticeboard"),
        exif_text=True, taken="2024:02:10 09:05:12", camera=_PHONE,
        text=("BIKE REPAIR", "CLINIC", "SATURDAY 10 AM"),
    ),
    _ImageSpec(
        "images/trail_closed_sign.jpg", (640, 480), _draw_trail_sign, 107,
        taken="2023:10:08 15:40:02", camera=_CAMERA,
        text=("TRAIL CLOSED", "ROCKFALL"),
    ),
    _ImageSpec(
        "images/tide_pool_sea_star.jpg", (640, 480), _draw_tide_pool, 108,
        description="An orange sea star clinging to a rock in a tide pool, surrounded by green anemones.",
        keywords=("tide pool", "sea star", "starfish", "anemone", "intertidal"),
        sidecar="json", taken="2023:08:15 07:48:30", camera=_CAMERA,
    ),
    _ImageSpec(
        "images/volcano_plume.jpg", (720, 480), _draw_volcano, 109,
        description="A snow-capped volcano releasing a tall grey ash plume into a pale blue sky.",
        keywords=("volcano", "eruption", "ash plume", "mountain"),
        title="Ash plume", exif_text=True, xmp=True,
        taken="2022:05:30 12:01:00", camera=_CAMERA,
    ),
    _ImageSpec(
        "images/roasted_coffee_beans.png", (600, 400), _draw_coffee, 110,
        description="Freshly roasted coffee beans cooling in a perforated steel tray after the second crack.",
        sidecar="txt",
    ),
    _ImageSpec(
        "images/heron_marsh.jpg", (640, 480), _draw_heron, 111,
        description="A grey heron standing motionless in a reed marsh at the edge of still water.",
        keywords=("heron", "bird", "marsh", "reeds", "wetland"),
        sidecar="json", taken="2023:04:22 06:55:10", camera=_CAMERA,
    ),
    _ImageSpec(
        "images/yarn_and_needles.jpg", (560, 420), _draw_yarn, 112,
        description="Two balls of blue and cream wool yarn with a pair of bamboo knitting needles on a wooden table.",
        keywords=("yarn", "knitting", "wool", "needles"),
        exif_text=True, taken="2024:01:07 16:20:00", camera=_PHONE,
    ),
    _ImageSpec(
        "images/chessboard_start.png", (480, 480), _draw_chessboard, 113,
        description="A chessboard set up in the starting position, seen from directly above.",
        keywords=("chess", "chessboard", "board game"),
        exif_text=True, taken="2023:12:27 20:10:00", camera=_PHONE,
    ),
    _ImageSpec("images/untitled_gradient.png", (400, 320), _draw_abstract, 114),  # no metadata at all
)


def _xmp_packet(title: str | None, description: str | None, keywords: tuple[str, ...]) -> str:
    e = _xml_escape
    parts = [
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>',
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">',
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">',
        '  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">',
    ]
    if title:
        parts.append(f'   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">{e(title)}</rdf:li></rdf:Alt></dc:title>')
    if description:
        parts.append(
            f'   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{e(description)}</rdf:li></rdf:Alt></dc:description>'
        )
    if keywords:
        items = "".join(f"<rdf:li>{e(k)}</rdf:li>" for k in keywords)
        parts.append(f"   <dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>")
    parts += ["  </rdf:Description>", " </rdf:RDF>", "</x:xmpmeta>", '<?xpacket end="w"?>']
    return "\n".join(parts)


def _exif_for(spec: _ImageSpec) -> Image.Exif | None:
    if not (spec.exif_text or spec.taken or spec.camera):
        return None
    exif = Image.Exif()
    if spec.exif_text and spec.description:
        exif[0x010E] = spec.description  # ImageDescription
    if spec.exif_text and spec.keywords:
        exif[0x9C9E] = ";".join(spec.keywords).encode("utf-16-le") + b"\x00\x00"  # XPKeywords
    if spec.camera:
        exif[0x010F], exif[0x0110] = spec.camera  # Make, Model
    if spec.taken:
        exif.get_ifd(0x8769)[0x9003] = spec.taken  # Exif IFD: DateTimeOriginal
    return exif


def _write_image(spec: _ImageSpec, corpus_dir: Path) -> list[str]:
    """Draw and save one image (and its sidecar); return the relative paths written."""
    im = Image.new("RGB", spec.size, (0, 0, 0))
    spec.draw(im, random.Random(spec.seed))
    target = corpus_dir / spec.path
    target.parent.mkdir(parents=True, exist_ok=True)
    exif = _exif_for(spec)
    xmp = _xmp_packet(spec.title, spec.description, spec.keywords) if spec.xmp else None
    kwargs: dict[str, object] = {}
    if exif is not None:
        kwargs["exif"] = exif
    if target.suffix == ".jpg":
        if xmp is not None:
            kwargs["xmp"] = xmp.encode("utf-8")
        im.save(target, "JPEG", quality=90, **kwargs)
    else:
        if xmp is not None:
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp)
            kwargs["pnginfo"] = info
        im.save(target, "PNG", **kwargs)
    written = [spec.path]
    if spec.sidecar == "txt":
        _write_bytes(corpus_dir / f"{spec.path}.txt", (spec.description or "").encode("utf-8") + b"\n")
        written.append(f"{spec.path}.txt")
    elif spec.sidecar == "json":
        payload = {"description": spec.description, "tags": list(spec.keywords)}
        _write_bytes(corpus_dir / f"{spec.path}.json", (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
        written.append(f"{spec.path}.json")
    return written


# ---------------------------------------------------------------------------------------
# Gold queries
# ---------------------------------------------------------------------------------------

_GOLD: tuple[GoldQuery, ...] = tuple(
    GoldQuery(query_id=qid, query=q, query_type=qt, relevant=rel)  # type: ignore[arg-type]
    for qid, q, qt, rel in (
        # keyword: exact, rare terms
        ("q01", "varroa mite oxalic acid", "keyword", {"docs/outdoors/beekeeping.md": 2}),
        ("q02", "Hohmann transfer delta-v", "keyword", {"docs/science/orbital_mechanics.md": 2}),
        (
            "q03", "Kitchener stitch", "keyword",
            {"docs/home/knitting_socks.txt": 2, "images/yarn_and_needles.jpg": 1},
        ),
        ("q04", "quoins chase lock-up", "keyword", {"docs/history/letterpress_printing.pdf": 2}),
        ("q05", "rain barrel rebate deadline", "keyword", {"notes/garden_committee_2024-03-12.txt": 2}),
        # semantic: paraphrases sharing few words with the target
        (
            "q06", "keeping a homemade bread-leavening culture healthy when I only bake once a week", "semantic",
            {"docs/kitchen/sourdough_starter.md": 2, "images/sourdough_loaf.jpg": 1},
        ),
        ("q07", "getting orange corrosion off an old frying pan", "semantic", {"docs/kitchen/cast_iron_care.pdf": 2}),
        (  # answered on the PDF's second page
            "q08", "measuring how many tonnes of gas a volcano gives off each day", "semantic",
            {"docs/science/volcano_monitoring.pdf": 2, "images/volcano_plume.jpg": 1},
        ),
        (  # answered by the last section of the long document
            "q09", "after a pipe burst the city says our supply may be unsafe, how long should I heat water before drinking it",
            "semantic", {"docs/municipal_water_treatment.md": 2},
        ),
        (
            "q10", "microscopic creatures that come back to life after being completely dried out", "semantic",
            {"docs/science/tardigrades.html": 2},
        ),
        (
            "q11", "how much of each client payment should I put aside for the government when I work for myself",
            "semantic", {"docs/home/tax_filing_freelancers.pdf": 2},
        ),
        (  # answered on the PDF's second page
            "q12", "the chain on my back wheel will not move cleanly onto the next sprocket", "semantic",
            {"docs/outdoors/bicycle_repair.pdf": 2, "images/bike_clinic_poster.png": 1},
        ),
        # visual: answered by an image's description, keywords or sidecar
        (
            "q13", "red lighthouse on a rocky shore at sunset", "visual",
            {"images/lighthouse_dusk.jpg": 2, "docs/history/lighthouse_history.html": 1},
        ),
        (
            "q14", "orange starfish in a rock pool", "visual",
            {"images/tide_pool_sea_star.jpg": 2, "docs/outdoors/tide_pools.txt": 1},
        ),
        (
            "q15", "grey heron standing among reeds", "visual",
            {"images/heron_marsh.jpg": 2, "docs/outdoors/birdwatching.html": 1},
        ),
        (  # the XMP names the market; the day itself is only in the painted text (OCR)
            "q16", "which day is the harbor market open", "visual", {"images/harbor_market_sign.png": 2},
        ),
        # mixed: a rare term plus a paraphrase, answers across documents and images
        (
            "q17", "photo of roasted coffee beans cooling after second crack", "mixed",
            {"images/roasted_coffee_beans.png": 2, "docs/kitchen/coffee_roasting.html": 1},
        ),
        (
            "q18", "cleaning pigeon droppings off photovoltaic panels", "mixed",
            {"docs/home/solar_panel_maintenance.md": 2, "images/solar_roof.jpg": 1},
        ),
    )
)


# ---------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def generate_demo_corpus(corpus_dir: Path, gold_path: Path) -> DemoCorpus:
    """Write the demo corpus under ``corpus_dir`` and its gold queries to ``gold_path``.

    Deterministic: the same bytes and mtimes every time. Existing files of the same name are
    overwritten; other files already in ``corpus_dir`` are left alone (nothing is deleted).
    ``gold_path`` must lie outside ``corpus_dir``, or it would be indexed as a document.
    """
    corpus_dir = Path(corpus_dir).resolve()
    gold_path = Path(gold_path).resolve()
    if gold_path.is_relative_to(corpus_dir):
        raise ValueError(f"gold_path {gold_path} must not be inside corpus_dir {corpus_dir}")
    corpus_dir.mkdir(parents=True, exist_ok=True)

    files: list[str] = []
    for doc in _DOCUMENTS:
        _write_bytes(corpus_dir / doc.path, _render(doc))
        files.append(doc.path)
    for spec in _IMAGES:
        files += _write_image(spec, corpus_dir)
    files.sort()

    gold_path.parent.mkdir(parents=True, exist_ok=True)
    gold_lines = [json.dumps(q.model_dump(), ensure_ascii=False) for q in _GOLD]
    gold_path.write_text("\n".join(gold_lines) + "\n", encoding="utf-8")

    # Fixed mtimes: files first, then directories deepest first (writing files touched them).
    for i, rel in enumerate(files):
        stamp = _MTIME_BASE + i * 3600
        os.utime(corpus_dir / rel, (stamp, stamp))
    dirs = sorted({p for rel in files for p in Path(rel).parents if p != Path(".")}, key=lambda p: (-len(p.parts), p))
    for d in dirs:
        os.utime(corpus_dir / d, (_MTIME_BASE, _MTIME_BASE))
    os.utime(gold_path, (_MTIME_BASE, _MTIME_BASE))

    return DemoCorpus(
        corpus_dir=corpus_dir,
        gold_path=gold_path,
        n_documents=len(_DOCUMENTS),
        n_images=len(_IMAGES),
        n_queries=len(_GOLD),
        files=files,
    )
